"""``edgeagent generate``: one prompt in, one answer out, from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from edgeagent.engine import SamplingParams, chat, generate, load
from edgeagent.errors import TokenizerError


def register(subparsers: Any) -> None:
    """Add the ``generate`` command."""
    parser = subparsers.add_parser(
        "generate",
        help="generate text from a prompt with a Gemma 3n checkpoint",
        description="Continue a prompt, wrapped in Gemma's chat format unless --raw.",
    )
    parser.add_argument("--model", required=True, help="checkpoint directory (Hugging Face layout)")
    parser.add_argument("--prompt", required=True, help="the user's message")
    parser.add_argument("--system", help="system prompt, folded into the user turn")
    parser.add_argument(
        "--raw", action="store_true", help="feed the prompt as is, no chat template"
    )
    parser.add_argument("--tier", help="MatFormer tier to run (default: full)")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="cap on new tokens")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top-k", type=int, default=64, help="0 = off")
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, help="seed for sampling (default: random)")
    parser.add_argument("--greedy", action="store_true", help="always take the likeliest token")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Load the model, generate, print the answer as it streams (or as JSON at the end)."""
    if args.max_new_tokens < 1:
        raise SystemExit("edgeagent generate: --max-new-tokens must be ≥ 1")
    model = load(args.model)
    tokenizer = model.tokenizer
    if tokenizer is None:
        raise TokenizerError(f"{args.model} has no tokenizer.json; generate needs one")
    text = args.prompt if args.raw else chat.render([("user", args.prompt)], system=args.system)
    prompt = tokenizer.encode(text)
    if model.config.bos_token_id is not None:
        prompt = [model.config.bos_token_id, *prompt]
    params = SamplingParams(
        temperature=0.0 if args.greedy else args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    stream = _TextStream(tokenizer, enabled=not args.json)
    result = generate(model, prompt, params, args.max_new_tokens, args.tier, stream.push)
    answer = [t for t in result.ids if t not in model.config.eos_token_ids]
    if args.json:
        out = {
            "text": tokenizer.decode(answer),
            "ids": result.ids,
            "stop_reason": result.stop_reason,
            "prompt_tokens": result.prompt_tokens,
            "new_tokens": len(result.ids),
            "ttft_ms": round(result.ttft_s * 1000, 1),
            "decode_tokens_per_s": round(result.decode_tokens_per_s, 2),
            "tier": args.tier or "full",
            "random_weights": model.config.random_weights,
        }
        print(json.dumps(out, ensure_ascii=False))
    else:
        stream.finish()
    return 0


class _TextStream:
    """Prints decoded text as tokens arrive, only the part that is new each time."""

    def __init__(self, tokenizer: Any, enabled: bool) -> None:
        self.tokenizer = tokenizer
        self.enabled = enabled
        self.ids: list[int] = []
        self.shown = ""

    def push(self, token: int) -> None:
        if not self.enabled:
            return
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.startswith(self.shown) and not text.endswith("\ufffd"):
            sys.stdout.write(text[len(self.shown) :])
            sys.stdout.flush()
            self.shown = text

    def finish(self) -> None:
        if self.enabled:
            sys.stdout.write("\n")
            sys.stdout.flush()
