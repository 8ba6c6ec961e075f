"""Pure planning: sizes, frames, prices and request rules."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from itertools import product
from pathlib import Path

import pytest

from openreel.domain.catalog import load_catalog
from openreel.domain.rules import MAX_SEED, resolve_video_request
from openreel.engine.plan import (
    center_crop_box,
    cover_size,
    grid_side,
    output_size,
    plan_render,
    sheet_layout,
)

CATALOG = load_catalog()


def plan(**overrides: object):  # type: ignore[no-untyped-def]
    args: dict[str, object] = dict(
        prompt="p",
        negative_prompt=None,
        seed=1,
        duration_s=8,
        resolution="720p",
        aspect_ratio="16:9",
        generate_audio=True,
        recipe="fast",
        has_first_frame=False,
        has_last_frame=False,
    )
    args.update(overrides)
    return plan_render(**args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("duration", "aspect", "resolution"), list(product((4, 6, 8), ("16:9", "9:16"), ("720p", "1080p")))
)
def test_every_combination_has_exact_size_and_8k_plus_1_frames(
    duration: int, aspect: str, resolution: str
) -> None:
    for scale in (1.0, 0.25):
        p = plan(duration_s=duration, aspect_ratio=aspect, resolution=resolution, grid_scale=scale)
        long_side, short_side = (1280, 720) if resolution == "720p" else (1920, 1080)
        landscape = aspect == "16:9"
        assert (p.width, p.height) == ((long_side, short_side) if landscape else (short_side, long_side))
        assert p.num_frames == duration * 24 and p.fps == 24
        assert p.gen_frames == p.num_frames + 1 and (p.gen_frames - 1) % 8 == 0
        # Two stages: the grid is /64, so stage 1 (half of it) is on LTX-2's /32 latent grid.
        assert p.gen_width % 64 == 0 and p.gen_height % 64 == 0
        assert all(side % 32 == 0 for side in p.stage_size(half=True))
        assert p.last_frame_index == p.num_frames - 1
        if scale == 1.0:
            assert p.gen_width >= p.width and p.gen_height >= p.height
            assert p.gen_width - p.width < 64 and p.gen_height - p.height < 64


def test_real_grids_are_the_nearest_multiple_of_64_above() -> None:
    assert (grid_side(1280, 1.0), grid_side(720, 1.0), grid_side(1080, 1.0)) == (1280, 768, 1088)
    assert (grid_side(1280, 0.25), grid_side(720, 0.25)) == (320, 192)
    assert output_size("1080p", "9:16") == (1080, 1920)


def test_cover_then_crop_never_stretches() -> None:
    assert cover_size((320, 192), (1280, 720)) == (1280, 768)
    assert center_crop_box((1280, 768), (1280, 720)) == (0, 24, 1280, 744)
    w, h = cover_size((300, 500), (1280, 720))
    assert w >= 1280 and h >= 720 and abs(w / h - 300 / 500) < 0.01


def test_the_plan_keeps_a_negative_prompt_only_when_there_is_one() -> None:
    assert plan().negative_prompt is None and plan(negative_prompt="").negative_prompt is None
    assert plan(negative_prompt="blurry").negative_prompt == "blurry"


def test_price_table_matches_the_published_one() -> None:
    fast, full, veo2 = CATALOG.get("veo-3.1-fast"), CATALOG.get("veo-3.1"), CATALOG.get("veo-2")
    assert fast and full and veo2
    assert [fast.price(d, a) for d in (4, 6, 8) for a in (False, True)] == [3, 5, 4, 6, 5, 8]
    assert [full.price(d, a) for d in (4, 6, 8) for a in (False, True)] == [5, 10, 8, 15, 10, 20]
    assert [veo2.price(d, False) for d in (5, 6, 7, 8)] == [15, 18, 20, 22]


def test_prices_can_be_overridden_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"veo-3.1-fast": {"4s-audio": 50}}))
    fast = load_catalog(path).get("veo-3.1-fast")
    assert fast and fast.price(4, True) == 50 and fast.price(4, False) == 3
    path.write_text(json.dumps({"veo-3.1-lite": {"extend-1s": 1, "extend-1s-audio": 2}}))
    assert "veo-3.1-lite" in load_catalog(path).extending and "veo-3.1-lite" not in load_catalog().extending
    for refused, says in [
        ({"sora-2": {"4s": 1}}, "unknown model 'sora-2'"),
        (["veo-3.1-fast"], "must map model ids to prices"),
        ({"veo-3.1-fast": 5}, "veo-3.1-fast must map variants to credits"),
        ({"veo-3.1-fast": {"5s": 5}}, "veo-3.1-fast has no variant '5s'; it has 4s, 4s-audio, 6s"),
        ({"veo-2": {"8s-audio": 5}}, "veo-2 has no variant '8s-audio'"),
        ({"veo-3.1-fast": {"4s": "5"}}, "veo-3.1-fast 4s: '5' is not a whole number of credits"),
        ({"veo-3.1-fast": {"4s": 2.5}}, "2.5 is not a whole number"),
        ({"veo-3.1-fast": {"4s": -1}}, "-1 is not a whole number"),
        ({"veo-3.1-fast": {"4s": True}}, "True is not a whole number"),
        (
            {"veo-3.1-lite": {"extend-1s": 1}},
            "veo-3.1-lite: extend-1s and extend-1s-audio are priced together",
        ),
    ]:
        path.write_text(json.dumps(refused))
        with pytest.raises(ValueError, match=re.escape(says)):
            load_catalog(path)


def resolve(model: str = "veo-3.1-fast", **params: object):  # type: ignore[no-untyped-def]
    return resolve_video_request(
        model_id=model, prompt="p", params=params, catalog=CATALOG, reference_images_supported=False
    )


def test_defaults_follow_the_contract() -> None:
    spec, details = resolve()
    assert not details and spec is not None
    assert (spec.duration, spec.aspect_ratio) == (8, "16:9")
    assert (spec.resolution, spec.generate_audio) == ("720p", True)
    assert 0 <= spec.seed <= MAX_SEED
    veo2, _ = resolve("veo-2")
    assert veo2 is not None and (veo2.duration, veo2.generate_audio) == (5, False)
    seeds = {resolve()[0].seed for _ in range(5)}  # type: ignore[union-attr]
    assert len(seeds) > 1


def test_rules_per_model() -> None:
    assert "veoParams.duration" in resolve("veo-2", duration=4)[1]
    assert resolve("veo-2", duration=7)[0] is not None
    assert "veoParams.generate_audio" in resolve("veo-3.1-lite", generate_audio=True)[1]
    assert "veoParams.reference_images" in resolve("veo-3.1-lite", reference_images=["https://a/b.png"])[1]
    assert "veoParams.aspect_ratio" in resolve(aspect_ratio="4:3")[1]
    assert "veoParams.seed" in resolve(seed=MAX_SEED + 1)[1]
    assert resolve(seed=MAX_SEED)[0] is not None
    assert "veoParams.last_frame" in resolve(last_frame="data:image/png;base64,AAAA")[1]
    spec, _ = resolve(negative_prompt="  ")
    assert spec is not None and spec.negative_prompt is None


def test_samples_are_one_to_four_each_seeded_one_up() -> None:
    assert resolve()[0].sample_count == 1  # type: ignore[union-attr]
    for count in (0, 5, -1):
        assert resolve(sample_count=count)[1]["veoParams.sample_count"] == ["must be between 1 and 4"]
    spec, _ = resolve(sample_count=3, seed=MAX_SEED - 1)
    assert spec is not None and spec.seeds == [MAX_SEED - 1, MAX_SEED, 0]  # round the 32-bit range


LONG = "p" * 4001
JOB = "0b5f1d4e-7a4c-4a0e-9d8e-2f6a1b3c4d5e"
REFS = ["https://a/b.png"] * 4


@pytest.mark.parametrize(
    ("model", "prompt", "params", "path", "words"),
    [
        ("veo-3.1-fast", LONG, {}, "prompt", "must be at most 4000 characters"),
        ("veo-3.1-fast", "  ", {}, "prompt", "must not be blank"),
        ("veo-3.1-fast", "p", {"negative_prompt": "n" * 2001}, "veoParams.negative_prompt", "at most 2000"),
        (
            "veo-3.1-fast",
            "p",
            {"reference_images": REFS},
            "veoParams.reference_images",
            "at most 3 reference",
        ),
        ("veo-3.1-fast", "p", {"extend_job_id": JOB, "duration": 8}, "veoParams.duration", "adds 7 s"),
        ("veo-3.1-fast", "p", {"extend_job_id": JOB, "resolution": "1080p"}, "veoParams.resolution", "720p"),
        (
            "veo-3.1-fast",
            "p",
            {"extend_job_id": JOB, "last_frame": "https://a/b.png"},
            "veoParams.last_frame",
            "cannot",
        ),
        (
            "veo-3.1-fast",
            "p",
            {"extend_job_id": JOB, "extend_video": -1},
            "veoParams.extend_video",
            "0 or more",
        ),
        ("veo-3.1-fast", "p", {"extend_video": 1}, "veoParams.extend_video", "needs veoParams.extend_job_id"),
        ("veo-3.1-fast", "p", {"extend_job_id": "../jobs"}, "veoParams.extend_job_id", "must be a job id"),
        ("veo-3.1-lite", "p", {"extend_job_id": JOB}, "veoParams.extend_job_id", "does not extend clips"),
        ("veo-2", "p", {"extend_job_id": JOB}, "veoParams.extend_job_id", "does not extend clips"),
        ("veo-3.1-fast", "p", {"aspect_ratio": ""}, "veoParams.aspect_ratio", "'' is not supported"),
        ("veo-3.1-fast", "p", {"resolution": ""}, "veoParams.resolution", "must be one of"),
    ],
)
def test_every_protocol_s_shared_rules_are_the_domain_s(
    model: str, prompt: str, params: dict[str, object], path: str, words: str
) -> None:
    spec, details = resolve_video_request(
        model_id=model, prompt=prompt, params=params, catalog=CATALOG, reference_images_supported=True
    )
    assert spec is None and any(words in message for message in details[path]), details


def test_an_extension_adds_seven_seconds_at_720p_and_keeps_what_it_was_asked() -> None:
    spec, details = resolve(
        extend_job_id=JOB.upper(), extend_video=2, aspect_ratio="9:16", seed=3, sample_count=2
    )
    assert not details and spec is not None and spec.extend is not None
    assert (spec.duration, spec.resolution, spec.seeds) == (7, "720p", [3, 4])
    assert (spec.extend.job_id, spec.extend.video, spec.extend.asked_aspect_ratio) == (JOB, 2, "9:16")
    assert spec.extend.key is None  # the service finds the clip
    assert type(spec).from_json(spec.to_json()) == spec
    assert spec.to_json() == asdict(spec)  # to_json is asdict, only faster
    fast = CATALOG.get("veo-3.1-fast")
    assert fast is not None and fast.price(7, True, extend=True) == 7 and fast.price(8, True) == 8


def test_each_id_names_its_recipe_and_every_size_has_two_stages() -> None:
    kinds = {model_id: spec.recipe for model_id, spec in CATALOG.models.items()}
    assert kinds == {
        "veo-3.1-fast": "fast",
        "veo-3-fast": "fast",
        "veo-3.1-lite": "fast",
        "veo-3.1": "quality",
        "veo-3": "quality",
        "veo-2": "quality",
    }
    landscape = plan(resolution="1080p")
    assert (landscape.gen_width, landscape.gen_height) == (1920, 1088)
    assert landscape.stage_size(half=True) == (960, 544) and landscape.stage_size(half=False) == (1920, 1088)
    portrait = plan(resolution="1080p", aspect_ratio="9:16")
    assert (portrait.gen_width, portrait.gen_height, portrait.stage_size(True)) == (1088, 1920, (544, 960))
    small = plan(resolution="720p")
    assert (small.gen_width, small.gen_height, small.stage_size(True)) == (1280, 768, (640, 384))


@pytest.mark.parametrize(
    ("sizes", "sheet", "rows"),
    [
        ([(640, 480)], (1280, 736), 1),
        ([(300, 600), (300, 600), (300, 600)], (1280, 736), 1),  # portraits side by side
        ([(800, 300), (800, 300), (800, 300)], (736, 1280), 3),  # wide ones stacked on a portrait sheet
        ([(500, 500), (500, 500), (500, 500)], (1024, 1024), 2),  # squares: 2 + a centred 1
    ],
)
def test_reference_sheet_layout_keeps_every_image_whole(sizes, sheet, rows: int) -> None:
    boxes = sheet_layout(sizes, sheet)
    assert len(boxes) == len(sizes) and len({top for _, top, _, _ in boxes}) == rows
    for (w, h), (left, top, bw, bh) in zip(sizes, boxes, strict=True):
        assert left >= 0 and left + bw <= sheet[0] and top >= 0 and top + bh <= sheet[1]
        assert abs(bw / bh - w / h) < 0.02  # aspect kept: not stretched, not cropped
    for i, a in enumerate(boxes):  # no overlaps
        for b in boxes[i + 1 :]:
            assert a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]
    if rows == 2 and len(sizes) == 3:
        left, _, width, _ = boxes[2]
        assert abs((left + width / 2) - sheet[0] / 2) <= 1  # the short last row is centred
    one = sheet_layout(sizes[:1], sheet)[0]
    assert one[2] == sheet[0] or one[3] == sheet[1]  # a single image fills the sheet one way
