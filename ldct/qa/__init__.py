"""Task-based image quality (DESIGN.md §10): what a physicist signs off before a denoiser is used.

``phantoms`` (CT-number, low-contrast and water modules at several patient sizes), ``scan``
(noise and kernel blur from the projection-domain simulator), ``observer`` (channelized Hotelling
observer), ``nps`` and ``ttf`` (noise texture, resolution), ``run`` (every model on the scans,
cached per condition), ``summary`` (dose-reduction estimate, detectability losses) and
``report`` (qa.md, qa.csv, figures).
"""
