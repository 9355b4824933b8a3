"""Loss-landscape sensitivity (Faroz 2024, "Sensitivity Analysis on Loss Landscape").

The method trains the simplest network, ``inputs -> one tanh unit`` with an MSE loss, and records
during training, for every input feature ``j``, the first, second and third derivatives of the
per-sample loss ``L_i = (tanh(w.x_i + b) - y_i)^2``, averaged over the data.  Which derivative
("with respect to the input ``x_j`` or the weight ``w_j``, diagonal or Hessian row/column") the paper
means is ambiguous; :data:`READINGS` offers four readings, defined in
:func:`~nnsens_core.landscape.tanh_unit.reading_derivatives`, and every reading and order is scored.  The paper's claim is that the *trend* of the second
derivative while the loss falls has the sign of the Spearman correlation between the feature and
the target.  This module measures that claim, it does not assume it.

Definitions (used by the page, the CLI and the tests):

* **History**: entry ``e`` is recorded with the parameters after ``e`` epochs; entry 0 is the
  Xavier-normal initialisation (bias 0), so a run of ``E`` epochs has ``E + 1`` entries
  (or fewer with ``record_every > 1``; the last epoch is always recorded).
* **Epochs where the loss falls**: recorded entries ``e >= 1`` whose full-data loss is below the
  previous recorded entry's.  With ``descent_share = s < 1`` only those up to the first entry where
  the loss has made ``s`` of its total drop (``loss[0] - min(loss)``) count: the main descent,
  without the long plateau where the loss still creeps down.
* **Trend** of feature ``j`` (per reading and order): ``rho_j`` = Spearman correlation between the
  epoch index and the mean derivative over the epochs where the loss falls.  Its *direction* is
  ``"increasing"`` if ``rho_j > flat_tol``, ``"decreasing"`` if ``rho_j < -flat_tol``, else ``"flat"``;
  ``"undetermined"`` with fewer than ``min_falling_epochs`` such epochs.  Its *label* describes the
  curve's shape (``"increasing"``, ``"decreasing"``, ``"rises then falls"``, ``"falls then rises"``,
  ``"fluctuates"``, ``"flat"``; :func:`curve_shape`).  The slope of a least-squares line over the
  same epochs is reported alongside.
* **Agreement**: the trend agrees with the data when an increasing direction meets a positive and a
  decreasing one a negative Spearman correlation between the feature and the target.  ``"flat"``,
  ``"undetermined"`` or a zero Spearman correlation count as *not determined* (``None``) and are left
  out of the agreement rate.  It is scored for every (reading, order)
  (:meth:`LandscapeResult.agreement_table`, :meth:`LandscapeResult.verdict`).

Retrains (``retrains = K``) are trained together: the ``K`` weight vectors are stacked into one
``(K, d)`` tensor and optimised with one optimizer on the sum of the ``K`` losses.  SGD and Adam act
element-wise, so this is exactly ``K`` independent runs (tests check run ``k`` equals a lone run of
its seed ``seed + k``).  All derivatives use ``torch.func`` (nested ``jvp`` along the basis vectors,
``vmap`` over basis vectors, samples and runs) - no per-sample Python loop.  For the tanh unit the
loss depends on ``x`` only through ``z = w.x + b``, so the nested ``jvp`` runs in ``z`` and the chain
rule ``d^k L/dx_j^k = w_j^k d^k L/dz^k`` gives every feature (O(n d) instead of O(n d^2); a test
checks it equals the nested ``jvp`` directly in the inputs).

For any loaded model there are NeuralSens-style summaries of ``dy/dx`` (:func:`input_gradient_summary`)
and a 2-D loss surface along two filter-normalised random directions (:func:`loss_surface`,
Li et al. 2018).  :func:`digits_landscape` is the image variant on scikit-learn's 8x8 digits.
"""

from __future__ import annotations

from .digits import DigitsLandscape, digits_landscape, load_digits_arrays
from .surface import (
    LossSurface,
    SurfaceConfig,
    choose_loss,
    filter_normalized_direction,
    input_gradient_summary,
    input_gradients,
    loss_surface,
)
from .tanh_unit import (
    DIRECTIONS,
    FINAL_ROWS,
    ORDERS,
    QUANTILES,
    READING_FORMULAS,
    READING_LABELS,
    READINGS,
    TRENDS,
    LandscapeConfig,
    TrainHistory,
    derivative_histories,
    diagonal_derivatives,
    loss_input_derivatives,
    paper_preset,
    reading_derivatives,
    reading_histories,
    reading_means,
    readings_per_sample,
    tanh_unit_input_derivatives,
    tanh_unit_loss,
    train_tanh_units,
    validate_xy,
    xavier_normal,
    z_derivatives,
)
from .trends import (
    LandscapeResult,
    Trend,
    classify_trend,
    curve_shape,
    falling_mask,
    prepare_xy,
    run_landscape,
    run_landscape_tabular,
    spearman_columns,
    trend_agreement,
)

__all__ = [
    "TRENDS",
    "DIRECTIONS",
    "READINGS",
    "READING_LABELS",
    "READING_FORMULAS",
    "paper_preset",
    "z_derivatives",
    "reading_derivatives",
    "readings_per_sample",
    "reading_means",
    "reading_histories",
    "curve_shape",
    "QUANTILES",
    "ORDERS",
    "FINAL_ROWS",
    "LandscapeConfig",
    "validate_xy",
    "diagonal_derivatives",
    "tanh_unit_loss",
    "tanh_unit_input_derivatives",
    "loss_input_derivatives",
    "TrainHistory",
    "xavier_normal",
    "train_tanh_units",
    "derivative_histories",
    "spearman_columns",
    "falling_mask",
    "Trend",
    "classify_trend",
    "trend_agreement",
    "LandscapeResult",
    "prepare_xy",
    "run_landscape",
    "run_landscape_tabular",
    "DigitsLandscape",
    "load_digits_arrays",
    "digits_landscape",
    "SurfaceConfig",
    "input_gradients",
    "input_gradient_summary",
    "filter_normalized_direction",
    "choose_loss",
    "LossSurface",
    "loss_surface",
]
