"""Global (Sobol') sensitivity of tabular networks, SALib style: ``sample -> evaluate -> analyze``.

* :func:`sample` builds exactly SALib 1.6's ``SALib.sample.sobol.sample`` matrix (same scrambled
  Sobol' base sequence for the same seed, same A / AB / BA / B row layout, same scaling), but
  vectorised instead of SALib's per-row Python loops.
* :func:`evaluate` runs the model on those rows in large batches on a device and returns the model
  output and, in the same forward pass (hooks), every neuron of one hidden layer.
* :func:`analyze` reproduces SALib 1.6's ``SALib.analyze.sobol.analyze`` estimators (Y standardised
  per output; S1 Saltelli 2010, ST Jansen, S2 Saltelli 2002; bootstrap CI = ``Z * std(ddof=1)`` of
  the resampled estimates, resample indices ``np.random.default_rng(seed).integers(N, size=(N, R))``
  as SALib draws them for a non-zero seed) in float64 torch for many outputs at once.  Every
  bootstrap mean is a row of ``counts @ per_row_terms / N`` where ``counts`` (R+1, N) holds how often
  each base row is drawn by each resample (row 0: all ones = the point estimate), so all resamples
  and all outputs are one matrix product per chunk of rows.

The model never enters :func:`analyze`.  :func:`run` chains the three steps; :func:`convergence`,
:func:`feature_reduction` and :func:`pca_comparison` build the paper's follow-up studies on them.
"""

from __future__ import annotations

from .estimators import (
    SobolIndices,
    analysis_bytes,
    analyze,
    bootstrap_indices,
    default_memory_limit,
    sample,
    z_value,
)
from .problem import OUTPUT, SobolConfig, SobolProblem, rows_per_sample
from .run import (
    SobolResult,
    check_width,
    default_layer,
    estimate_bytes,
    evaluate,
    hidden_layers,
    input_width,
    run,
    target_labels,
)
from .studies import (
    ConvergenceResult,
    FeatureReductionConfig,
    FeatureReductionResult,
    PCA_IMPORTANCE,
    PCAComparison,
    PCASettings,
    convergence,
    feature_reduction,
    pca_comparison,
    pca_rows,
    powers_of_two,
)
from .paper import (
    ESTIMATORS,
    PAPER,
    PaperPreset,
    StepSensitivity,
    model_accuracy,
    step_sensitivity,
    target_warnings,
)

__all__ = [
    "OUTPUT",
    "SobolProblem",
    "SobolConfig",
    "rows_per_sample",
    "sample",
    "SobolIndices",
    "z_value",
    "bootstrap_indices",
    "analysis_bytes",
    "default_memory_limit",
    "analyze",
    "input_width",
    "check_width",
    "hidden_layers",
    "default_layer",
    "target_labels",
    "evaluate",
    "SobolResult",
    "estimate_bytes",
    "run",
    "ConvergenceResult",
    "powers_of_two",
    "convergence",
    "FeatureReductionConfig",
    "FeatureReductionResult",
    "feature_reduction",
    "PCAComparison",
    "PCASettings",
    "pca_comparison",
    "pca_rows",
    "PCA_IMPORTANCE",
    "ESTIMATORS",
    "PAPER",
    "PaperPreset",
    "StepSensitivity",
    "step_sensitivity",
    "target_warnings",
    "model_accuracy",
]
