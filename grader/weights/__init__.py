"""Host only: the ImageNet-pretrained weights a course lets students load, in a grader without network.

``rubric.yaml``'s ``pretrained:`` lists them (torchvision names or course checkpoints, ``grader.rubric``);
``catalog`` resolves them to the files torchvision's hub looks for; ``store`` keeps them in ``<cache>/weights/``
(verified on the way in) and gives each batch a read-only torch home holding exactly them; ``command`` is
``grader weights add | fetch | list``.
"""
from grader.weights.catalog import Weight, resolve, weights_folder
from grader.weights.store import WeightsError, WeightsMissing, add, check_node, fetch, fingerprint, provide, status

__all__ = ["Weight", "WeightsError", "WeightsMissing", "add", "check_node", "fetch", "fingerprint", "provide",
           "resolve", "status", "weights_folder"]
