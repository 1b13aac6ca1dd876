# The production grading image: a CUDA PyTorch base plus the `grader` package, and nothing else from the
# repository (never reference/, tests/, examples/: .dockerignore keeps them out of the build context and the
# COPY lines below name the only inputs).
#
#   build:          docker build -t seg-autograder:latest .
#   another base:   docker build --build-arg BASE=pytorch/pytorch:2.4.1-cuda12.4-cudnn9-runtime -t seg-autograder:latest .
#   no registry:    bash .ci/build-image.sh  (a debootstrapped Debian base; torch from the package index)
#   use:            grader grade ... --sandbox docker   (one container per submission: its PID 1 is
#                   `python -m grader.sandbox.forkserver`, which forks `grader.runner` for each stage)
#
# The engine overrides the user (a fresh non-root uid per submission), mounts /job, /submission (read-only),
# /runs (the stages' out folders) and /ctl (the server's socket), and puts tmpfs on /tmp and /scratch: Docker
# gives a tmpfs the mode of the folder it covers, hence 1777.
ARG BASE=pytorch/pytorch:2.4.1-cuda12.1-cudnn9-runtime
FROM ${BASE}
ARG BASE
# A base without torch (a plain Debian made by .ci/build-image.sh) gets a virtual environment with these,
# from the package index the build sees (PIP_INDEX_URL / PIP_EXTRA_INDEX_URL build args, else PyPI).
ARG TORCH_SPEC="torch torchvision"
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=

LABEL org.opencontainers.image.title="seg-autograder" \
      org.opencontainers.image.description="Sandbox image for the semantic segmentation autograder" \
      seg-autograder.base="${BASE}" \
      seg-autograder.versions="/opt/grader/versions.txt"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN if python -c "import torch" 2>/dev/null; then echo "torch from the base: $BASE"; \
    else python3 -m venv /opt/venv && /opt/venv/bin/pip install ${TORCH_SPEC}; fi

# The project's dependencies in a layer of their own (kept while only grader/ changes), then the package
# itself without them; the exact versions that resulted are recorded for every result's provenance.
WORKDIR /opt/grader
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print(chr(10).join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && python -m pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt
COPY grader/ ./grader/
RUN python -m pip install --no-deps . \
 && python -m pip freeze > /opt/grader/versions.txt \
 && python -c "import sys, torch; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())" >> /opt/grader/versions.txt \
 && test ! -e /opt/grader/reference \
 && python -c "import importlib.util as u, sys; sys.exit(u.find_spec('reference') is not None)"

RUN (getent passwd 10001 || useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin grader) \
 && mkdir -p /job /out /runs /ctl /submission \
 && mkdir -p /scratch && chmod 1777 /scratch /tmp \
 && chmod -R a+rX /opt/grader

ENV PYTHONPATH=/opt/grader
USER 10001:10001
WORKDIR /scratch
ENTRYPOINT []
CMD ["python", "-c", "import grader, torch; print(grader.__file__, torch.__version__, torch.cuda.is_available())"]
