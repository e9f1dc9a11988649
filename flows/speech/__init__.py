"""Speech for emoforge dialogues: engines, prosody, casting, content-addressed clips, mixing, ASR checks.

The entry point for the build flow is :func:`flows.speech.pipeline.synthesise_home`.
"""

from schemas.config.speech import AudioBounds, SpeechConfig, load_speech_config
from flows.speech.pipeline import synthesise_home

__all__ = ["AudioBounds", "SpeechConfig", "load_speech_config", "synthesise_home"]
