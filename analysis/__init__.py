"""What the trials mean: tables, correlations, figures, claim checks and the sweep report.

``analysis.collect`` is the only module that reads MLflow or Tune folders; everything else is
a pure function of the tidy trial DataFrame it returns. Every analysis is also a command:
``python -m analysis.{drops,correlate,dynamics,claims,gradcam,tsne,report} --experiment NAME``.
"""
