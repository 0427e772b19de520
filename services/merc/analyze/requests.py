"""A manifest line as the requests the encoders (or the gateway) receive: built in this one place.

Every run mode builds its requests here: embedded, ``--remote`` and training on a labelled manifest.
The text's context comes from one ``ContextMemory`` per run, fed each line in conversation order
(``next``), so the text encoder reads the same bytes whether a line is served or trained on.
"""

from __future__ import annotations

import time

from merc.analyze import manifest
from merc.media import SAMPLE_RATE, MediaError, files, video
from merc.pipeline.modalities import InvalidInput
from merc.runtime.config import Settings
from merc.v1 import common_pb2, encoder_pb2, gateway_pb2


def utterance_ref(u: manifest.Utterance, tenant: str) -> common_pb2.UtteranceRef:
    return common_pb2.UtteranceRef(tenant=tenant, conversation_id=u.conversation, sequence=u.utterance, speaker=u.speaker,
                                   start_ms=u.start_ms or 0, end_ms=u.end_ms or 0)


def encode_request(u: manifest.Utterance, tenant: str, context_text: str) -> encoder_pb2.EncodeRequest:
    """An encoder's request for the line; ``context_text`` from ``ContextMemory.next`` (merc.pipeline.text_context)."""
    return encoder_pb2.EncodeRequest(utterance=utterance_ref(u, tenant), text=u.text or "", context_text=context_text,
                                     sent_at_ms=int(time.time() * 1000))


def gateway_request(u: manifest.Utterance, tenant: str, context_text: str) -> gateway_pb2.AnalyzeUtteranceRequest:
    """The gateway's request for the line, text and context as ``encode_request`` puts them (media: ``attach_media``)."""
    return gateway_pb2.AnalyzeUtteranceRequest(utterance=utterance_ref(u, tenant), text=u.text or "", context_text=context_text)


class NotInFile(Exception):
    """The line's media file has no stream for this modality (a silent video, an audio-only file)."""


def attach_media(u: manifest.Utterance, request, modality: str, cfg: Settings) -> None:
    """Attach the line's media for one modality to an encoder or gateway request.

    Files are sent as they are; a ``video`` is cut to the line's span here and re-packed as raw
    16 kHz PCM and ``cfg.video_frames`` PNG frames, so the services validate one kind of input. Raw
    bytes stay in this process. Every path must be a regular file; what is read whole is read with
    a cap (the request's MERC_MAX_MESSAGE_BYTES), what is decoded stops at the settings' limits.
    """
    budget = cfg.max_message_bytes
    why = "the request limit (MERC_MAX_MESSAGE_BYTES)"

    def read(path) -> bytes:
        nonlocal budget
        data = files.read_regular_file(path, budget, why)
        budget -= len(data)
        return data

    try:
        if modality == "audio" and u.audio is not None:
            request.audio.data = read(u.audio)
        elif modality == "audio" and u.video is not None:
            wave = video.audio_span(u.video, u.start_ms, u.end_ms, cfg.max_recording_seconds, cfg.max_audio_seconds)
            if wave is None:
                raise NotInFile(f"{u.video.name} has no audio track")
            request.audio.CopyFrom(encoder_pb2.Audio(data=wave.astype("<f4").tobytes(), encoding="pcm_f32le",
                                                     sample_rate=SAMPLE_RATE, channels=1))
        elif modality == "vision" and (u.frames or u.faces):
            request.frames.extend(encoder_pb2.Image(data=read(p)) for p in u.frames)
            request.faces.extend(encoder_pb2.Image(data=read(p)) for p in u.faces)
        elif modality == "vision" and u.video is not None:
            images = video.frames_span(u.video, u.start_ms, u.end_ms, cfg.video_frames, cfg.max_image_pixels,
                                       cfg.max_recording_seconds)
            if not images:
                raise NotInFile(f"{u.video.name} has no video frames in this span")
            request.frames.extend(encoder_pb2.Image(data=png(img)) for img in images)
    except OSError as e:
        raise InvalidInput(f"cannot read {modality} file: {e.filename}: {e.strerror}") from None
    except MediaError as e:
        raise InvalidInput(str(e)) from None


def png(image) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise MediaError("cannot re-encode a video frame")
    return buf.tobytes()
