"""The vision pipeline's parts: the image turn's layout, the image budget at rebuilds, looking
(:class:`Sight`), descriptions' tags, and the governor's rungs on the real video-file source."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from edgeagent import engine
from edgeagent.events import Event, VisionResult
from edgeagent.governor.ladder import build_ladder
from edgeagent.pipeline import history, prompts
from edgeagent.pipeline.service import AssistantService
from edgeagent.pipeline.sight import NoSight, SeenFrame, Sight
from edgeagent.pipeline.vision import Vision
from edgeagent.sdnotify import Notifier
from edgeagent.settings import CameraSettings, Settings
from edgeagent.stages import StageContext
from tests.capture_video.conftest import VIDEO

SHORT = 8  # soft tokens of the budget tests' images


@pytest.fixture(scope="module")
def model(voice_model: Path) -> engine.TextModel:
    return engine.load(voice_model, 2048)


def image(model: engine.TextModel, seed: int, tokens: int = 256) -> np.ndarray:
    """Stand-in soft tokens of an image (the budget tests use short ones: prefill is slow)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((tokens, model.config.hidden_size)).astype(np.float32)  # [k, H]


def look_turn(conversation: engine.Conversation, soft: np.ndarray, question: str) -> None:
    conversation.begin_turn()
    conversation.add_text(prompts.image_turn_opening())
    conversation.add_image(soft)
    conversation.add_text(prompts.image_turn_closing(question))


def test_an_image_turn_is_start_of_image_256_soft_tokens_end_of_image_then_the_text(
    model: engine.TextModel,
) -> None:
    conversation = engine.Conversation(model)
    soft = image(model, 1)
    look_turn(conversation, soft, "What is this?")
    marks = model.checkpoint.multimodal_tokens
    ids = conversation.ids().tolist()
    start = ids.index(marks.boi_token_id)
    assert ids[start + 1 : start + 257] == [marks.image_token_id] * 256
    assert ids[start + 257] == marks.eoi_token_id
    tokenizer = model.tokenizer
    assert tokenizer is not None
    opening = tokenizer.encode("<start_of_turn>user\n\n\n")
    closing = tokenizer.encode("\n\nWhat is this?<end_of_turn>\n<start_of_turn>model\n")
    assert ids[:start] == [model.config.bos_token_id, *opening]
    assert ids[start + 258 :] == closing
    soft_runs = [s for s in conversation.history if s.embeds is not None]
    assert len(soft_runs) == 1 and np.array_equal(soft_runs[0].embeds, soft)
    assert conversation.image_tokens() == 256 and conversation.images() == 1
    conversation.feed()
    assert conversation.state.position == len(ids)


def test_images_over_the_budget_are_dropped_at_the_next_rebuild_words_kept(
    model: engine.TextModel,
) -> None:
    conversation = engine.Conversation(model)
    conversation.max_images = 2
    questions = ["first?", "second?", "third?"]
    for n, question in enumerate(questions):
        look_turn(conversation, image(model, n, SHORT), question)
        conversation.reply(max_new_tokens=2)
    assert conversation.images() == 3, "nothing is dropped until the cache is rebuilt"
    before = conversation.length
    fed = conversation.rebuild()
    assert conversation.images() == 2 and conversation.image_tokens() == 2 * SHORT
    assert fed == conversation.length == before - (SHORT + 2)
    kept = [s.embeds for s in conversation.history if s.embeds is not None]
    assert all(np.array_equal(k, image(model, n, SHORT)) for k, n in zip(kept, (1, 2), strict=True))
    marks = model.checkpoint.multimodal_tokens
    ids = conversation.ids().tolist()
    assert ids.count(marks.boi_token_id) == ids.count(marks.eoi_token_id) == 2
    tokenizer = model.tokenizer
    assert tokenizer is not None
    assert all(q in tokenizer.decode(ids) for q in questions), "the turns' words stay"
    assert conversation.turns() == [1, 2, 3]
    conversation.forget_turns([3])  # another rebuild: still within the budget
    assert conversation.images() == 1


def test_a_zero_budget_keeps_no_image_after_a_rebuild(model: engine.TextModel) -> None:
    conversation = engine.Conversation(model)
    conversation.max_images = 0
    look_turn(conversation, image(model, 5, SHORT), "and now?")
    conversation.reply(max_new_tokens=2)
    conversation.rebuild()
    assert conversation.images() == 0 and conversation.image_tokens() == 0


def seen(sent: int) -> SeenFrame:
    return SeenFrame(f"{sent:032x}", sent, float(sent), "request", sent, np.zeros((256, 4)))


async def test_look_waits_for_a_frame_sent_on_after_it_asked() -> None:
    sight = Sight(CameraSettings())
    with pytest.raises(NoSight, match=r"camera\.enabled") as info:
        await sight.look(1.0)
    assert info.value.code == "no_camera"
    sight.capturing()
    sight.encoded(seen(sight.sent()))  # sent on before the look: not what it waits for
    looking = asyncio.create_task(sight.look(5.0))
    await asyncio.sleep(0.01)
    assert sight.gate.pending_request, "the gate is asked for the next frame"
    assert not looking.done()
    sight.encoded(seen(sight.sent()))
    assert (await asyncio.wait_for(looking, 5)).sent == 2
    with pytest.raises(NoSight, match=r"within 0\.05 s"):
        await sight.look(0.05)
    waiting = asyncio.create_task(sight.look(5.0))
    await asyncio.sleep(0.01)
    sight.unavailable("the camera source ended")
    with pytest.raises(NoSight, match="ended"):
        await asyncio.wait_for(waiting, 5)


@pytest.mark.parametrize(
    ("text", "description", "tags"),
    [
        ("A red ball on a table.\nTags: ball, Table, red.", "A red ball on a table.",
         ("ball", "table", "red")),
        ("A dim room", "A dim room", ()),
        ("tags: a, a, , b", "", ("a", "b")),
    ],
)  # fmt: skip
def test_descriptions_are_split_into_a_sentence_and_tags(
    text: str, description: str, tags: tuple[str, ...]
) -> None:
    assert prompts.split_description(text) == (description, tags)


async def run_vision(
    voice_model: Path, short_tmp: Path, rung: str, then: str | None = None
) -> list[object]:
    """The vision stage over the whole video, read losslessly, on the ladder's ``rung`` (and
    from the first cut on, ``then``), with the describe task on."""
    settings = Settings.model_validate({
        "daemon": {"state_dir": str(short_tmp)},
        "model": {"path": str(voice_model), "max_context": 1024},
        "audio": {"enabled": False},
        "camera": {"source": "file", "device": str(VIDEO), "file_realtime": False,
                   "max_fps": 10.0, "describe": True},
        "governor": {"economy_max_fps": 0.5},
    })  # fmt: skip
    ctx = StageContext(settings, Notifier(None))
    service = AssistantService(settings)
    try:
        await service.load_model(ctx)
        service.ladder = build_ladder(("full", "economy"), None, economy_max_fps=0.5)
        service.rung = rung
        out: list[object] = []

        async def watch() -> None:  # the governor's move, at the first cut
            while True:
                item = await ctx.channels.results.get()
                out.append(item)
                if isinstance(item, Event) and item.data.get("reason") == "scene_change":
                    service.rung = then or service.rung

        watcher = asyncio.create_task(watch())
        async with asyncio.timeout(60):
            await Vision(ctx, service).run()
        await asyncio.sleep(0)
        watcher.cancel()
    finally:
        await service.close()
    while not ctx.channels.results.empty():
        out.append(ctx.channels.results.get_nowait())
    return out


async def test_economy_caps_the_frame_rate_and_turns_encoding_off(
    voice_model: Path, short_tmp: Path, no_ambient_settings: None
) -> None:
    results = await run_vision(voice_model, short_tmp, "economy")
    changes = [r for r in results if isinstance(r, Event) and r.event_type == "scene_change"]
    # 0.5 frames/s of a 10 frames/s video: frames 0, 20, 40, … offered; 20 and 80 are steady
    assert [(e.data["frame_index"], e.data["reason"]) for e in changes] == [
        (0, "first"), (40, "scene_change"), (60, "scene_change"), (100, "scene_change")
    ]  # fmt: skip
    assert not [r for r in results if isinstance(r, VisionResult)], "vision is off: no encoding"


async def test_full_rung_describes_and_suspend_looks_at_nothing(
    voice_model: Path, short_tmp: Path, no_ambient_settings: None
) -> None:
    results = await run_vision(voice_model, short_tmp / "full", "full")
    changes = [r for r in results if isinstance(r, Event) and r.event_type == "scene_change"]
    assert [e.data["frame_index"] for e in changes] == [0, 30, 60, 90]
    described = [r.frame_id for r in results if isinstance(r, VisionResult)]
    ids = [e.data["frame_id"] for e in changes]
    assert described and set(described) <= set(ids) and ids[-1] in described  # newest kept
    results = await run_vision(voice_model, short_tmp / "suspend", "suspend")
    kinds = [r.event_type for r in results if isinstance(r, Event)]
    assert kinds == ["camera_source_opened", "camera_source_ended"]


async def test_a_rung_change_caps_the_running_camera(
    voice_model: Path, short_tmp: Path, no_ambient_settings: None
) -> None:
    results = await run_vision(voice_model, short_tmp, "full", then="economy")
    changes = [r.data for r in results if isinstance(r, Event) and r.event_type == "scene_change"]
    indices = [c["frame_index"] for c in changes]
    # 10 frames/s up to the first cut, then 0.5: the next cuts are seen up to 20 frames late
    assert indices[:2] == [0, 30] and len(indices) == 4
    assert 60 < indices[2] <= 80 and 90 < indices[3] <= 110
    described = {r.frame_id for r in results if isinstance(r, VisionResult)}
    assert not described & {c["frame_id"] for c in changes[2:]}, "economy: nothing encoded"


def test_saved_images_come_back_within_the_budget(model: engine.TextModel, tmp_path: Path) -> None:
    conversation = engine.Conversation(model)
    for n in range(3):
        look_turn(conversation, image(model, n, SHORT), f"look {n}")
        conversation.reply(max_new_tokens=2)
    path = tmp_path / "conversation.npz"
    history.save(conversation, path, {1: 1.0, 2: 2.0, 3: 3.0})
    restored = engine.Conversation(model)
    restored.max_images = 1  # a smaller budget than when it was saved
    assert history.load(restored, path) == {1: 1.0, 2: 2.0, 3: 3.0}
    assert restored.images() == 1 and restored.turns() == [1, 2, 3]
    (kept,) = [s.embeds for s in restored.history if s.embeds is not None]
    assert np.allclose(kept, image(model, 2, SHORT), atol=1e-2)  # float16 on disk
