"""A free-text prompt as token ids, in the model's chat format or as written (`depmask decode`,
a harvest's `prompts_file`); the benchmarks build theirs in `tasks.benchmarks.base`."""

from __future__ import annotations

from depmask.tasks.benchmarks.base import has_chat_template


def check_chat(tokenizer, chat: bool | None, option: str = "chat") -> bool:
    """Whether prompts go through the chat template: `chat`, or (None) whether the tokenizer has
    one; true for a tokenizer without one is refused, naming `option`."""
    if chat is None:
        return has_chat_template(tokenizer)
    if chat and not has_chat_template(tokenizer):
        raise ValueError(f"`{option}` is true but the model's tokenizer has no chat template")
    return bool(chat)


def encode_prompt(text: str, tokenizer, chat: bool | None, option: str = "chat") -> list[int]:
    """A prompt's token ids: as a chat user turn with the assistant turn opened (the template's text
    carries its own BOS, so none is added), or the text as written."""
    chat = check_chat(tokenizer, chat, option)
    if chat:
        text = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
