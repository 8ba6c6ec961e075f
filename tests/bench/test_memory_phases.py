"""bench/memory_phases.py: the render shapes it assumes and a quick end-to-end run of its phases."""

from __future__ import annotations

from memory_phases import SIZES, Render, predict, render_table


def test_render_shapes_match_the_pipeline() -> None:
    hd = Render("720p", *SIZES["720p"], seconds=8)
    full_hd = Render("1080p", *SIZES["1080p"], seconds=8)
    assert (hd.frames, hd.latent_frames, hd.audio_tokens) == (193, 25, 201)
    assert (hd.video_tokens(1), hd.video_tokens(2)) == (6_000, 24_000)
    assert (full_hd.video_tokens(1), full_hd.video_tokens(2)) == (12_750, 51_000)
    assert full_hd.pixels(1) == (544, 960)


def test_phases_run_end_to_end_and_free_what_they_build() -> None:
    renders = [Render("720p", *SIZES["720p"], seconds=2)]
    report = predict("LTX-2-19B-dev", renders, [1], parts=("upsampler", "audio"))
    assert [row.phase for row in report.rows] == [
        "latent upsampler 720p (stage-1 latent 7x12x20)",
        "audio VAE decode + vocoder, 2 s",
    ]
    assert report.params["latent_upsampler"] == 497_867_904
    assert all(row.peak > 0 and row.weights > 0 for row in report.rows)
    table = render_table(report)
    assert "latent_upsampler" in table and "act.peak" in table
