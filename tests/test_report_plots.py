"""Plots say how many images each mean covers and mark published points as such (issue 11, item 15)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

from sedic.evaluation.published import published_points  # noqa: E402
from sedic.evaluation.report import PUBLISHED_IMAGES, metric_figure, plot_metrics  # noqa: E402


def _means(n_ok: int):
    out = []
    for method, base in (("sedic-preview", 22.0), ("webp", 21.0)):
        for bpp in (0.02, 0.05):
            out.append({"method": method, "target_bpp": bpp, "bpp": bpp * 0.95, "images": 3, "ok": n_ok,
                        "psnr": base + 40 * bpp, "psnr_n": n_ok})
    return out


def _texts(fig):
    ax = fig.axes[0]
    labels = ax.get_legend_handles_labels()[1]
    notes = [t.get_text() for t in fig.texts]
    return labels, notes


def test_legend_counts_images_and_marks_published_points():
    fig = metric_figure(_means(3), ["sedic-preview", "webp"], "psnr", "kodak: 3 image(s)")
    labels, notes = _texts(fig)
    plt.close(fig)
    ours = [label for label in labels if label.startswith(("sedic-preview", "webp"))]
    assert ours == ["sedic-preview (mean of 3 images, this run)", "webp (mean of 3 images, this run)"]
    published = [label for label in labels if label not in ours]
    assert len(published) == len(published_points("psnr")) > 0
    assert all(f"published, all {PUBLISHED_IMAGES} Kodak images" in label for label in published)
    assert len(notes) == 1 and "means of 3 images" in notes[0] and f"all {PUBLISHED_IMAGES}" in notes[0]


def test_no_caveat_over_the_full_set_and_no_published_when_not_asked():
    fig = metric_figure(_means(PUBLISHED_IMAGES), ["sedic-preview", "webp"], "psnr", "kodak")
    labels, notes = _texts(fig)
    plt.close(fig)
    assert notes == [] and "sedic-preview (mean of 24 images, this run)" in labels
    fig = metric_figure(_means(3), ["sedic-preview"], "psnr", "folder", show_published=False)
    labels, notes = _texts(fig)
    plt.close(fig)
    assert labels == ["sedic-preview (mean of 3 images, this run)"] and notes == []


def test_counts_that_differ_between_rates(tmp_path):
    means = _means(3)
    means[1]["psnr_n"] = 2  # one image missed the second rate
    fig = metric_figure(means, ["sedic-preview"], "psnr", "kodak")
    labels, _ = _texts(fig)
    plt.close(fig)
    assert labels[0] == "sedic-preview (means of 2-3 images, this run)"
    written = plot_metrics(tmp_path, means, ["sedic-preview"], ["psnr"], "kodak")
    assert [p.name for p in written] == ["psnr.png"] and written[0].read_bytes()[:4] == b"\x89PNG"
