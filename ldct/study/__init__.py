"""Reader studies: blinded, randomized scoring of original and denoised CT by radiologists.

``definition`` reads the study YAML, ``store`` keeps everything in SQLite (WAL, one commit per
submission), ``service`` runs studies (creation, reader sessions, coordinator actions),
``analysis`` and ``report`` turn the scores into statistics, figures and a report.
"""
