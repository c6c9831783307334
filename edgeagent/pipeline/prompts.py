"""What each task asks the model, in Gemma's chat format, and the wake-phrase check.

A spoken user turn is ``<start_of_turn>user\\n{instruction}\\n\\n<start_of_audio>``,
the soft tokens, ``<end_of_audio>\\n\\n<end_of_turn>\\n<start_of_turn>model\\n``
(the layout of transformers' Gemma3nProcessor, which puts ``\\n\\n`` around
the audio). The instruction comes before the audio, so everything up to the
last soft token is prefilled while the person is still speaking; at the end
of speech only the closing tokens remain.

A user turn with a camera image (``cmd/ask`` with ``"look": true``, the
``describe`` task) is laid out the same way, the image first:
``<start_of_turn>user\n\n\n<start_of_image>``, 256 soft tokens,
``<end_of_image>\n\n{question}<end_of_turn>\n<start_of_turn>model\n`` (the
processor puts ``\n\n`` around ``<start_of_image>`` … ``<end_of_image>``).
"""

from __future__ import annotations

import re
import unicodedata

from edgeagent.engine import chat

# The instructions of Gemma 3n's speech tasks (its model card's ASR and AST prompts).
_INSTRUCTIONS = {
    "assistant": "Answer the request in this audio briefly.",
    "transcribe": "Transcribe the following speech segment.",
    "translate": "Translate the following speech segment into {language}.",
}
TRANSCRIBE_AFTER = "Transcribe the speech of my last audio message."
TEXT_TASKS = {
    "assistant": "{text}",
    "transcribe": "{text}",
    "translate": "Translate into {language}: {text}",
}

# BCP 47 primary tags a user is likely to name, spelled out for the prompt.
LANGUAGES = {
    "ar": "Arabic", "bn": "Bengali", "cs": "Czech", "da": "Danish", "de": "German",
    "el": "Greek", "en": "English", "es": "Spanish", "fa": "Persian", "fi": "Finnish",
    "fr": "French", "he": "Hebrew", "hi": "Hindi", "hu": "Hungarian", "id": "Indonesian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "nl": "Dutch", "no": "Norwegian",
    "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish",
    "sw": "Swahili", "th": "Thai", "tr": "Turkish", "uk": "Ukrainian", "ur": "Urdu",
    "vi": "Vietnamese", "zh": "Chinese",
}  # fmt: skip


def language_name(tag: str) -> str:
    """``fr`` → ``French``; a tag not in :data:`LANGUAGES` is used as given."""
    return LANGUAGES.get(tag.split("-", maxsplit=1)[0].lower(), tag)


def spoken_turn_opening(task: str, target_language: str | None) -> str:
    """The text of a spoken user turn up to ``<start_of_audio>`` (not included)."""
    instruction = _INSTRUCTIONS[task].format(language=language_name(target_language or "en"))
    return f"{chat.START}user\n{instruction}\n\n"


def spoken_turn_closing() -> str:
    """The text after ``<end_of_audio>``: close the user turn, open the model's."""
    return "\n\n" + chat.END + "\n" + chat.generation_prompt()


DESCRIBE = (
    "Describe this scene in one short sentence. Then, on a new line, write 'Tags:' and up "
    "to five one-word tags, separated by commas."
)
_TAGS = re.compile(r"^\W*tags\W*:(.*)$", re.IGNORECASE | re.MULTILINE)
_MAX_TAGS = 8


def image_turn_opening() -> str:
    """The text of a user turn with an image, up to ``<start_of_image>`` (not included)."""
    return f"{chat.START}user\n\n\n"


def image_turn_closing(question: str) -> str:
    """The text after ``<end_of_image>``: the question, closing the user turn, opening the
    model's."""
    return f"\n\n{question}{chat.END}\n" + chat.generation_prompt()


def split_description(text: str) -> tuple[str, tuple[str, ...]]:
    """A description as the model wrote it (:data:`DESCRIBE`) -> (the sentence, its tags).

    The tags are read from a ``Tags:`` line (comma-separated, lower-cased, at most eight);
    without one there are none, and the whole text is the description.
    """
    match = _TAGS.search(text)
    if match is None:
        return text.strip(), ()
    tags = [t.strip(" .;:!?\"'").lower() for t in match.group(1).split(",")]
    sentence = (text[: match.start()] + text[match.end() :]).strip()
    return sentence, tuple(dict.fromkeys(t for t in tags if t))[:_MAX_TAGS]


def text_turn(task: str, text: str, target_language: str | None) -> str:
    """A typed (or wake-phrase-stripped) request for ``task`` as a user turn's content."""
    return TEXT_TASKS[task].format(text=text, language=language_name(target_language or "en"))


def _words(text: str) -> list[str]:
    folded = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    return re.findall(r"[^\W_]+", plain)


def after_wake_phrase(transcript: str, phrase: str) -> str | None:
    """The transcript after ``phrase`` if it starts with it (case, accents and punctuation
    ignored), else None. ``"Hey, Gemma! Lights on."`` after ``"hey gemma"`` → ``"Lights on."``
    """
    wanted = _words(phrase)
    if not wanted or _words(transcript)[: len(wanted)] != wanted:
        return None
    # cut the transcript after the phrase's last word, wherever punctuation put it
    pattern = r"\W*".join(re.escape(w) for w in wanted)
    folded = unicodedata.normalize("NFKD", transcript.casefold())
    plain = "".join(c for c in folded if not unicodedata.combining(c))
    match = re.match(r"\W*" + pattern, plain)
    if match is None or len(plain) != len(transcript):  # accents changed the length
        return " ".join(_words(transcript)[len(wanted) :])
    return transcript[match.end() :].lstrip(" ,.!?;:-").strip()
