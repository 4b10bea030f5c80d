"""Reader studies: blinded, randomized scoring of original and denoised CT by radiologists.

``definition`` reads the study YAML (Likert criteria, detection tasks with truth), ``store``
keeps everything in SQLite (WAL, one commit per submission), ``service`` runs studies
(creation, reader sessions, coordinator actions), ``page`` serves the browser reader page,
``mrmc`` is the Obuchowski-Rockette analysis and sample-size planning, ``analysis`` and
``report`` turn the scores into statistics, figures, mrmc.csv and a report.
"""
