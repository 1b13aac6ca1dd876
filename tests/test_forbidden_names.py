"""The default forbidden patterns cover the whole transpose-convolution family under every name the installed
torch has: every operator whose name holds "conv" is either matched or on an explicit, commented allow-list,
so a new torch release that adds a kernel fails here instead of silently opening a gap (issue 22)."""
from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st

from grader.checks.forbidden import DEFAULT_TRANSPOSE_CONV, detected, matches
from grader.rubric import load_rubric
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Forward convolutions (and helpers that are no convolution at all): allowed in transpose_conv2d, e.g. conv2d on
# a zero-inserted input (fixture passes_transpose_conv_zero_insertion). Each is an exact name: a NEW op whose
# name holds "conv" must be added here or be matched by the defaults, after someone read what it computes.
ALLOWED = {
    # the forward convolution entry points (aten.convolution with transposed=True is recorded as conv_transpose)
    "aten::conv1d", "aten::conv2d", "aten::conv3d", "aten::convolution", "aten::_convolution",
    "aten::_convolution_mode", "aten::convolution_overrideable", "aten::conv_tbc",
    # backend forward kernels (CUDA / MPS / MIOpen / oneDNN / NNPACK), forward only
    "aten::cudnn_convolution", "aten::cudnn_convolution_add_relu", "aten::cudnn_convolution_relu",
    "aten::miopen_convolution", "aten::miopen_convolution_add_relu", "aten::miopen_convolution_relu",
    "aten::miopen_depthwise_convolution", "aten::mkldnn_convolution", "aten::_mps_convolution",
    "aten::_nnpack_spatial_convolution", "aten::_conv_depthwise2d", "aten::conv_depthwise3d",
    "mkldnn::_convolution_pointwise", "mkldnn::_convolution_pointwise_", "mkldnn_prepacked::conv2d_run",
    # weight layout helpers (no convolution is computed)
    "aten::mkldnn_reorder_conv2d_weight", "aten::mkldnn_reorder_conv3d_weight", "mkldnn::_reorder_convolution_weight",
    "mkldnn_prepacked::conv2d_prepack",
    # quantized forward convolutions and their packing
    "_quantized::conv2d", "_quantized::conv2d_prepack", "_quantized::conv2d_relu", "_quantized::conv3d",
    "_quantized::conv3d_prepack", "_quantized::conv3d_relu", "onednn::qconv1d_pointwise", "onednn::qconv2d_pointwise",
    "onednn::qconv3d_pointwise", "onednn::qconv_pointwise", "onednn::qconv_prepack",
    *(f"quantized::conv{d}d{suffix}" for d in (1, 2, 3) for suffix in (
        "", "_add", "_add_relu", "_dilation", "_dynamic", "_groups", "_output_padding", "_padding", "_prepack",
        "_relu", "_stride", "_unpack", "_unpack_sizes")),
    "quantized::conv_prepack", "quantized::conv_unpack",
}
NOT_CONVOLUTIONS = ("convert",)  # _convert_indices_from_coo_to_csr, prims::convert_element_type ...


def _conv_ops() -> list[str]:
    return sorted({n.split(".")[0] for n in torch._C._dispatch_get_all_op_names() if "conv" in n.lower()})


def test_every_conv_op_of_this_torch_is_forbidden_or_explicitly_allowed() -> None:
    ops = _conv_ops()
    assert len(ops) > 40, ops  # the enumeration itself works
    gaps = [n for n in ops if not any(matches(p, n) for p in DEFAULT_TRANSPOSE_CONV)
            and n not in ALLOWED and not any(w in n for w in NOT_CONVOLUTIONS)]
    assert gaps == [], f"ops neither forbidden by default nor allowed (read what they compute): {gaps}"


def test_the_transposed_slow_and_input_gradient_kernels_are_forbidden() -> None:
    must = ["aten::conv_transpose2d", "aten::slow_conv_transpose2d", "aten::slow_conv_transpose3d",
            "aten::cudnn_convolution_transpose", "aten::miopen_convolution_transpose",
            "aten::_mps_convolution_transpose", "mkldnn::_convolution_transpose_pointwise",
            "quantized::conv_transpose2d", "aten::convolution_backward", "aten::convolution_backward_overrideable",
            "aten::_slow_conv2d_backward", "aten::_slow_conv2d_forward", "aten::thnn_conv2d", "aten::slow_conv3d",
            "aten::conv_tbc_backward", "aten::_convolution_double_backward", "aten::mps_convolution_backward",
            "ConvTranspose2d", "conv2d_input", "interpolate", "upsample_bilinear2d", "UpsamplingNearest2d"]
    assert [n for n in must if not any(matches(p, n) for p in DEFAULT_TRANSPOSE_CONV)] == []
    assert all(n in _conv_ops() for n in must if "::" in n), "a name of this list left torch: update it"
    allowed = ["conv2d", "aten::convolution", "einsum", "transpose", "permute", "aten::new_zeros", "unfold"]
    assert [n for n in allowed if any(matches(p, n) for p in DEFAULT_TRANSPOSE_CONV)] == []


def test_the_rubric_forbids_what_the_default_forbids() -> None:
    for name in ("rubric.yaml", "tests/rubric_small.yaml"):
        rubric = load_rubric(REPO / name)
        for check in rubric.checks:
            if check.kind == "transpose_conv":
                assert set(DEFAULT_TRANSPOSE_CONV) <= set(check.forbidden), (name, check.id)


def test_a_pattern_matches_anywhere_in_the_name() -> None:
    ops = ["aten:slow_conv_transpose2d", "aten:_slow_conv2d_backward", "torch:add", "guard:a thread started"]
    assert detected(("conv*transpose", "conv*backward"), ops) == ops[:2] + ops[3:]
    assert detected((), ops) == []  # an unguarded check judges nothing, guard findings included


@given(st.lists(st.one_of(st.text(max_size=300), st.integers(), st.none(), st.binary(max_size=20)), max_size=40),
       st.lists(st.text(min_size=1, max_size=20), max_size=5))
def test_any_record_is_read_without_crashing(ops: list, patterns: list[str]) -> None:
    hits = detected(tuple(patterns), ops)
    assert all(isinstance(h, str) and len(h) <= 220 and h in ops for h in hits)
