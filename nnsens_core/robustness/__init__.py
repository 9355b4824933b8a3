"""Robustness of perturbation-mask explanations (Thibeau-Sutre et al. 2020, "Visualization
approach to assess the robustness of neural networks for medical image classification").

* :mod:`.metrics` -- prob_CNN, ROI densities and cosine, pixel similarities of masks, top-n
  regions and their agreement, balanced accuracy;
* :mod:`.grid` -- hyperparameter robustness: group masks over a lambda1 x lambda2 grid and their
  similarity tables (:func:`lambda_grid`);
* :mod:`.retrain` -- training robustness: runs x folds of the same architecture, a group mask per
  network, inter-run / inter-fold similarities (:func:`training_robustness`).

The masks themselves come from :mod:`nnsens_core.saliency.meaningful_mask` (``group_mask``,
``PAPER_MASK``).
"""
from ..saliency.meaningful_mask import (
    PAPER_MASK,
    GroupMaskResult,
    MaskConfig,
    formula,
    group_mask,
)
from .grid import GridSettings, LambdaGridResult, lambda_grid
from .metrics import (
    balanced_accuracy,
    combine_masks,
    mask_similarity,
    masked_probability,
    pixel_cosine,
    pixel_spearman,
    prob_cnn,
    region_agreement,
    roi_cosine,
    roi_density,
    top_p_iou,
    top_regions,
)
from .retrain import (
    RetrainResult,
    RetrainSettings,
    Unit,
    UnitResult,
    plan_units,
    run_unit,
    training_robustness,
)

__all__ = ["PAPER_MASK", "GridSettings", "GroupMaskResult", "LambdaGridResult", "MaskConfig",
           "RetrainResult", "RetrainSettings", "Unit", "UnitResult", "balanced_accuracy",
           "combine_masks", "formula", "group_mask", "lambda_grid", "mask_similarity",
           "masked_probability", "pixel_cosine", "pixel_spearman", "plan_units", "prob_cnn",
           "region_agreement", "roi_cosine", "roi_density", "run_unit", "top_p_iou",
           "top_regions", "training_robustness"]
