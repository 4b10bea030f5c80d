"""The demo: a CT (real slab or phantom) -> simulated quarter dose -> the recommended denoiser
(the network with the best worst-kernel gain on training cases, `ldct.registry.recommended`,
else non-local means).

Writes a side-by-side PNG in the liver window and returns the metrics table, so a new user sees
what the project does before any server or trained model exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ldct import metrics, registry  # noqa: E402
from ldct.data import demo_case  # noqa: E402
from ldct.infer import denoise  # noqa: E402
from ldct.simulate import LowDoseParams, simulate_low_dose  # noqa: E402

DEMO_SLICES = 6


@dataclass
class DemoReport:
    source: str
    rows: list[dict]
    figure: Path


def run_demo(out: Path, data_dir: Path | None = None, dose: float = 0.25) -> DemoReport:
    """Run the demo and write ``out/demo.png``; returns the metrics rows.

    ``data_dir`` is the shared data folder; without it (or without ircadb17 in it) the
    synthetic phantom is used.
    """
    name, normal, liver = demo_case(data_dir, DEMO_SLICES)
    source = "synthetic phantom" if name == "phantom" else f"{name} ({DEMO_SLICES} central slices)"
    low = simulate_low_dose(normal, LowDoseParams(dose=dose), seed=1, progress=False)
    model = registry.recommended()
    denoised = denoise(low, model).hu
    body = metrics.body_mask(normal.hu)
    rows = []
    for name, image in (("low dose", low.hu), (model, denoised)):
        rows.append({"method": name, "psnr_db": metrics.psnr(image, normal.hu),
                     "ssim": metrics.ssim(image, normal.hu),
                     "rmse_hu": metrics.rmse_hu(image, normal.hu, body),
                     "liver_bias_hu": metrics.hu_bias(image, normal.hu, liver),
                     "liver_noise_sd": metrics.noise_sd(image, liver, normal.hu)})
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "demo.png"
    k = normal.hu.shape[0] // 2
    panels = (("normal dose", normal.hu[k]), (f"simulated dose {dose:g}", low.hu[k]),
              (rows[1]["method"], denoised[k]))
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    lo, hi = metrics.LIVER_WINDOW
    for ax, (title, image) in zip(axes, panels):
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"{source} - liver window W400/L40")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(figure, dpi=100)
    plt.close(fig)
    return DemoReport(source=source, rows=rows, figure=figure)
