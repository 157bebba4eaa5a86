"""The shared media model: tokens, audio mapping, profile rules and their persistence."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from atomrelay.onvif.media_model import MediaModel
from atomrelay.onvif.media_types import (
    AUDIO_ENCODER,
    AUDIO_SOURCE,
    KINDS,
    PTZ,
    VIDEO_ENCODER,
    VIDEO_SOURCE,
    audio_codec,
    host_without_port,
)
from atomrelay.state import StateError, StateStore
from atomrelay.xml import ns
from atomrelay.xml.soap import SoapFault
from tests.helpers import settled
from tests.media.support import CAMERAS, TRT, MediaHarness, faults, swing_only_ptz


def structure(model: MediaModel) -> dict[str, Any]:
    """Everything a client can see of the model, keyed by token (order-independent)."""
    return {
        "profiles": {p.token: p for p in model.profiles()},
        "sources": sorted((s.token, s.width, s.height, s.framerate) for s in model.video_sources),
        "audio": sorted(s.token for s in model.audio_sources),
        **{kind: sorted(c.token for c in model.configurations(kind)) for kind in KINDS},
    }


def reorder(cameras: str) -> str:
    """The camera list in reverse order, each camera's streams reversed too."""
    blocks = ["  - id:" + block for block in cameras.split("  - id:") if block.strip()]
    reversed_blocks = []
    for block in blocks:
        head: list[str] = []
        streams: list[list[str]] = []
        for line in block.rstrip("\n").split("\n"):
            if line.startswith("      - "):
                streams.append([line])
            elif line.startswith("         ") and streams:
                streams[-1].append(line)  # a stream entry continued on the next line
            else:
                head.append(line)
        reversed_blocks.append("\n".join(head + [line for stream in streams[::-1] for line in stream]) + "\n")
    return "".join(reversed_blocks[::-1])


def test_one_profile_per_stream_with_id_derived_tokens(tmp_path: Path) -> None:
    """Each camera stream is a fixed profile <camera>.<stream> holding its camera's source and its own encoders."""
    model = MediaHarness(tmp_path).model
    profiles = {p.token: p for p in model.profiles()}
    assert list(profiles) == ["cam2.main", "cam2.sub", "swing.main", "swing.sub", "wyze.hd", "aac.main"]
    assert all(p.fixed for p in profiles.values())
    main = profiles["cam2.main"]
    assert (main.video_source, main.video_encoder, main.audio_source, main.audio_encoder) == (
        "cam2.vsc", "cam2.main.ve", "cam2.asc", "cam2.main.ae",
    )
    assert profiles["swing.main"].audio_encoder is None and profiles["swing.main"].audio_source is None
    assert profiles["wyze.hd"].audio_encoder is None
    every = [c.token for kind in KINDS for c in model.configurations(kind)] + [s.token for s in model.video_sources]
    assert len(every) == len(set(every))


def test_video_source_is_the_largest_stream(tmp_path: Path) -> None:
    """A camera's VideoSource has the resolution of its largest stream and the highest fps."""
    model = MediaHarness(tmp_path).model
    sources = {s.token: s for s in model.video_sources}
    assert (sources["cam2.vs"].width, sources["cam2.vs"].height, sources["cam2.vs"].framerate) == (1920, 1080, 20)
    assert (sources["aac.vs"].width, sources["aac.vs"].height) == (1280, 720)


def test_audio_mapping_per_stream_shape(tmp_path: Path) -> None:
    """Transcoded H.264 is G.711 8 kHz, transcoded H.265 is AAC 48 kHz, passthrough only with a declared codec."""
    cameras = {c.id: c for c in MediaHarness(tmp_path).config.cameras}
    codecs = {f"{c.id}.{s.name}": audio_codec(s) for c in cameras.values() for s in c.streams}
    main, sub = codecs["cam2.main"], codecs["cam2.sub"]
    assert main is not None and (main.media1, main.media2, main.sample_rate, main.bitrate) == ("G711", "PCMU", 8000, 64)
    assert sub is not None and (sub.media1, sub.media2, sub.sample_rate) == ("AAC", "MP4A-LATM", 48000)
    opus = codecs["swing.sub"]
    assert opus is not None and (opus.media1, opus.media2) == (None, "opus")
    passthrough_aac = codecs["aac.main"]
    assert passthrough_aac is not None and (passthrough_aac.media1, passthrough_aac.sample_rate_khz) == ("AAC", 8)
    assert codecs["swing.main"] is None  # audio: none
    assert codecs["wyze.hd"] is None  # passthrough without audio_codec: unknown, so not offered


def test_tokens_survive_restart_and_config_reorder(tmp_path: Path) -> None:
    """Reordering cameras and streams and restarting changes no token, no profile content and keeps user profiles."""
    first = MediaHarness(tmp_path)
    settled(first.model.create_profile("Mine", configurations=[(VIDEO_SOURCE, "aac.vsc"), (VIDEO_ENCODER, "aac.main.ve")]))
    before = structure(first.model)
    again = MediaHarness(tmp_path, cameras=reorder(CAMERAS))
    assert [c.id for c in again.config.cameras] == ["aac", "wyze", "swing", "cam2"]
    assert structure(again.model) == before


def test_longest_ids_give_valid_reference_tokens(tmp_path: Path) -> None:
    """30-character camera and stream ids still give tokens of at most 64 characters."""
    long = "c" * 30
    cameras = f"  - id: {long}\n    host: 192.0.2.1\n    streams: [{{name: {'s' * 30}, rtsp_path: x}}]\n"
    model = MediaHarness(tmp_path, cameras=cameras).model
    tokens = [p.token for p in model.profiles()] + [c.token for k in KINDS for c in model.configurations(k)]
    assert tokens and max(len(t) for t in tokens) <= 64


def test_create_profile_is_saved_atomically_and_reloaded(tmp_path: Path) -> None:
    """A created and changed profile is in state_dir/profiles.json and comes back after a restart."""
    harness = MediaHarness(tmp_path)
    profile = settled(harness.model.create_profile("SynoProfile"))
    assert (profile.token, profile.fixed) == ("profile1", False)
    settled(harness.model.change_profile("profile1", add=[(VIDEO_SOURCE, "cam2.vsc"), (VIDEO_ENCODER, "cam2.main.ve")]))
    saved = json.loads((tmp_path / "profiles.json").read_text())
    assert saved["profiles"][0]["video_encoder"] == "cam2.main.ve"
    assert not list(tmp_path.glob(".profiles.*"))  # no temp file left behind
    reloaded = MediaHarness(tmp_path).model.profile("profile1")
    assert (reloaded.name, reloaded.video_source, reloaded.video_encoder) == ("SynoProfile", "cam2.vsc", "cam2.main.ve")
    assert settled(MediaHarness(tmp_path).model.create_profile("next")).token == "profile2"


def test_per_camera_device_keeps_its_own_profiles(tmp_path: Path) -> None:
    """A per-camera device saves its profiles under profiles-<device id>, apart from the aggregate device."""
    settled(MediaHarness(tmp_path, device_id="cam2").model.create_profile("only cam2"))
    assert (tmp_path / "profiles-cam2.json").exists()
    assert [p.token for p in MediaHarness(tmp_path).model.profiles() if not p.fixed] == []


def test_saved_profiles_that_no_longer_fit_are_repaired(tmp_path: Path) -> None:
    """Malformed entries are skipped, tokens taken by fixed profiles are refused, vanished configurations dropped."""
    (tmp_path / "profiles.json").write_text(json.dumps({
        "next": 7,
        "profiles": [
            "garbage",
            {"token": "cam2.main", "name": "clash"},
            {"token": "old", "name": "Old", "video_source": "gone.vsc", "video_encoder": "cam2.main.ve"},
            {"token": "mixed", "name": "Mixed", "video_source": "cam2.vsc", "video_encoder": "aac.main.ve"},
        ],
    }))
    model = MediaHarness(tmp_path).model
    users = {p.token: p for p in model.profiles() if not p.fixed}
    assert list(users) == ["old", "mixed"]
    assert (users["old"].video_source, users["old"].video_encoder) == (None, "cam2.main.ve")
    assert (users["mixed"].video_source, users["mixed"].video_encoder) == ("cam2.vsc", None)
    assert settled(model.create_profile("x")).token == "profile7"


def test_slots_of_a_camera_taken_out_for_a_while_come_back_with_it(tmp_path: Path) -> None:
    """A reload takes a camera out: a user profile's slots on it are empty meanwhile, but other profile changes save
    them again, so they are back when the camera is; a slot filled meanwhile, or a profile deleted, ends them."""
    without_aac = CAMERAS.split("  - id: aac")[0]
    first = MediaHarness(tmp_path)
    mine = settled(first.model.create_profile("Mine", configurations=[(VIDEO_SOURCE, "aac.vsc"),
                                                                       (VIDEO_ENCODER, "aac.main.ve")]))
    gone = settled(first.model.create_profile("Gone", configurations=[(VIDEO_SOURCE, "aac.vsc")]))
    meanwhile = MediaHarness(tmp_path, cameras=without_aac).model
    assert (meanwhile.profile(mine.token).video_source, meanwhile.profile(mine.token).video_encoder) == (None, None)
    settled(meanwhile.create_profile("Other"))
    settled(meanwhile.delete_profile(gone.token))
    saved = {p["token"]: p for p in json.loads((tmp_path / "profiles.json").read_text())["profiles"]}
    assert (saved[mine.token]["video_source"], saved[mine.token]["video_encoder"]) == ("aac.vsc", "aac.main.ve")
    back = MediaHarness(tmp_path).model
    assert (back.profile(mine.token).video_source, back.profile(mine.token).video_encoder) == (
        "aac.vsc", "aac.main.ve")
    assert gone.token not in {p.token for p in back.profiles()}
    meanwhile = MediaHarness(tmp_path, cameras=without_aac).model
    settled(meanwhile.change_profile(mine.token, add=[(VIDEO_SOURCE, "cam2.vsc")]))
    settled(meanwhile.create_profile("Another"))
    saved = {p["token"]: p for p in json.loads((tmp_path / "profiles.json").read_text())["profiles"]}
    assert (saved[mine.token]["video_source"], saved[mine.token]["video_encoder"]) == ("cam2.vsc", "aac.main.ve")


def test_profile_limit_counts_fixed_profiles(tmp_path: Path) -> None:
    """With max_profiles 8 and 6 fixed profiles two can be made; the third is Receiver/Action/MaxNVTProfiles."""
    model = MediaHarness(tmp_path, max_profiles=8).model
    settled(model.create_profile("a"))
    settled(model.create_profile("b"))
    with pytest.raises(SoapFault) as info:
        settled(model.create_profile("c"))
    assert faults(info.value) == ("Receiver", "Action", "MaxNVTProfiles")
    assert model.max_profiles == 8


def test_fixed_profiles_exceeding_the_limit_are_all_served(tmp_path: Path) -> None:
    """A limit below the number of streams still serves every stream and reports that number."""
    model = MediaHarness(tmp_path, max_profiles=2).model
    assert len(model.profiles()) == 6 and model.max_profiles == 6
    with pytest.raises(SoapFault) as info:
        settled(model.create_profile("none left"))
    assert info.value.subcodes == ("Action", "MaxNVTProfiles")


def test_profile_token_rules(tmp_path: Path) -> None:
    """A chosen token is kept; a taken one is ProfileExists; a generated one skips taken tokens."""
    model = MediaHarness(tmp_path).model
    assert settled(model.create_profile("x", token="profile1")).token == "profile1"
    assert settled(model.create_profile("y")).token == "profile2"
    for taken in ("profile1", "cam2.main"):
        with pytest.raises(SoapFault) as info:
            settled(model.create_profile("z", token=taken))
        assert faults(info.value) == ("Sender", "InvalidArgVal", "ProfileExists")
    with pytest.raises(SoapFault) as info:
        settled(model.create_profile("n" * 65))
    assert info.value.subcodes == ("InvalidArgVal",)


def test_delete_rules(tmp_path: Path) -> None:
    """Fixed profiles are Sender/Action/DeletionOfFixedProfile, unknown ones NoProfile; a deletion is saved."""
    harness = MediaHarness(tmp_path)
    settled(harness.model.create_profile("temp"))
    with pytest.raises(SoapFault) as info:
        settled(harness.model.delete_profile("cam2.main"))
    assert faults(info.value) == ("Sender", "Action", "DeletionOfFixedProfile")
    with pytest.raises(SoapFault) as info:
        settled(harness.model.delete_profile("nope"))
    assert faults(info.value) == ("Sender", "InvalidArgVal", "NoProfile")
    settled(harness.model.delete_profile("profile1"))
    assert [p.token for p in MediaHarness(tmp_path).model.profiles() if not p.fixed] == []


def test_configurations_of_two_cameras_or_streams_conflict(tmp_path: Path) -> None:
    """A profile cannot mix cameras, nor a video and audio encoder of different streams."""
    model = MediaHarness(tmp_path).model
    settled(model.create_profile("p", configurations=[(VIDEO_SOURCE, "cam2.vsc")]))
    for add in ([(VIDEO_ENCODER, "aac.main.ve")], [(VIDEO_ENCODER, "cam2.sub.ve"), (AUDIO_ENCODER, "cam2.main.ae")]):
        with pytest.raises(SoapFault) as info:
            settled(model.change_profile("profile1", add=add))
        assert faults(info.value) == ("Receiver", "Action", "ConfigurationConflict")
    assert model.profile("profile1").video_encoder is None  # all or nothing
    with pytest.raises(SoapFault) as info:
        settled(model.change_profile("profile1", add=[(AUDIO_SOURCE, "wyze.asc")]))
    assert faults(info.value) == ("Sender", "InvalidArgVal", "NoConfig")


def test_fixed_profiles_accept_only_what_they_hold(tmp_path: Path) -> None:
    """Re-adding a fixed profile's own configuration succeeds; changing it is ConfigurationConflict."""
    model = MediaHarness(tmp_path).model
    assert settled(model.change_profile("cam2.main", add=[(VIDEO_ENCODER, "cam2.main.ve")])).video_encoder == "cam2.main.ve"
    for change in ({"add": [(VIDEO_ENCODER, "cam2.sub.ve")]}, {"remove": [AUDIO_ENCODER]}, {"name": "renamed"}):
        with pytest.raises(SoapFault) as info:
            settled(model.change_profile("cam2.main", **change))  # type: ignore[arg-type]
        assert faults(info.value) == ("Receiver", "Action", "ConfigurationConflict")
    assert model.compatible(VIDEO_ENCODER, model.profile("cam2.main"))[0].token == "cam2.main.ve"


def test_a_failed_save_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When state_dir cannot be written the operation is Receiver/Action and the profiles stay as they were."""
    harness = MediaHarness(tmp_path)

    def refuse(name: str, document: Any) -> None:
        raise StateError("disk full")

    monkeypatch.setattr(StateStore, "save", lambda self, name, document: refuse(name, document))
    with pytest.raises(SoapFault) as info:
        settled(harness.model.create_profile("lost"))
    assert faults(info.value) == ("Receiver", "Action")
    assert [p.token for p in harness.model.profiles() if not p.fixed] == []


def test_ptz_hook_decides_which_profiles_hold_ptz(tmp_path: Path) -> None:
    """Fixed profiles of cameras the PTZ hook answers for hold the camera's PTZ configuration, others none."""
    model = MediaHarness(tmp_path, ptz=swing_only_ptz).model
    by_token = {p.token: p.ptz for p in model.profiles()}
    assert by_token["swing.main"] == by_token["swing.sub"] == "swing.ptzc"
    assert by_token["cam2.main"] is None
    assert [c.token for c in model.configurations(PTZ)] == ["swing.ptzc"]
    assert MediaHarness(tmp_path / "no-hook").model.configurations(PTZ) == []


def test_generation_moves_with_every_change(tmp_path: Path) -> None:
    """Creating, changing, deleting and invalidate() each advance the generation response caches key on."""
    model = MediaHarness(tmp_path).model
    seen = [model.generation]
    settled(model.create_profile("g"))
    seen.append(model.generation)
    settled(model.change_profile("profile1", add=[(VIDEO_SOURCE, "cam2.vsc")]))
    seen.append(model.generation)
    settled(model.delete_profile("profile1"))
    seen.append(model.generation)
    model.invalidate()
    seen.append(model.generation)
    assert seen == sorted(set(seen))


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("192.0.2.7:8080", "192.0.2.7"),
        ("relay.example", "relay.example"),
        ("relay.example:80", "relay.example"),
        ("[2001:db8::1]:8080", "[2001:db8::1]"),
        ("[2001:db8::1]", "[2001:db8::1]"),
    ],
)
def test_host_without_port(host: str, expected: str) -> None:
    """The RTSP host is the request host without the ONVIF port; IPv6 literals keep their brackets."""
    assert host_without_port(host) == expected


def test_ptz_camera_lookup_for_the_ptz_service(tmp_path: Path) -> None:
    """ptz_camera names the camera of a profile's PTZ configuration, "" without one, None for no profile."""
    model = MediaHarness(tmp_path, ptz=swing_only_ptz).model
    settled(model.create_profile("moves", configurations=[(PTZ, "swing.ptzc")]))
    settled(model.create_profile("still", configurations=[(VIDEO_SOURCE, "cam2.vsc")]))
    assert [model.ptz_camera(t) for t in ("swing.sub", "profile1", "cam2.main", "profile2", "nope")] == [
        "swing", "swing", "", "", None,
    ]


def test_late_ptz_detection_reaches_cached_profiles(tmp_path: Path) -> None:
    """When the PTZ hook starts answering for a camera (model detected late) and the model is invalidated, as the
    composition root does on a model change, cached GetProfile answers show it at once."""
    detected: set[str] = set()
    harness = MediaHarness(tmp_path, ptz=lambda c: swing_only_ptz(c) if c.id in detected else None)
    before = harness.call("GetProfile", TRT.ProfileToken("swing.main"))
    assert before[0].find(f"{{{ns.TT}}}PTZConfiguration") is None
    detected.add("swing")
    harness.model.invalidate()
    after = harness.call("GetProfile", TRT.ProfileToken("swing.main"))
    assert after[0].find(f"{{{ns.TT}}}PTZConfiguration") is not None
