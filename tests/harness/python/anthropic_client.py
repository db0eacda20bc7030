"""The official `anthropic` Python SDK pointed at Tollgate, as an application would use it.

Usage: anthropic_client.py BASE_URL TOLLGATE_KEY

Makes a plain `messages.create`, a `messages.create(stream=True)` read event by event, a
`messages.stream` with the SDK's accumulating helper, then one call over the plan's limit and
one with an unknown key, and prints what the SDK surfaced as one JSON object on stdout.
Anything unexpected ends the script with a traceback.
"""

import json
import sys

import anthropic

MESSAGES = [{"role": "user", "content": "Say hello."}]


def usage(u):
    """The counts an application would read (and bill by) from the SDK's usage object."""
    return {
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
    }


def text_of(message):
    return "".join(block.text for block in message.content if block.type == "text")


def refusal(call):
    """What the SDK raised for a call the gateway refuses (`class` is None if nothing was)."""
    try:
        call()
    except anthropic.APIStatusError as e:
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "type": e.type,
            "message": e.api_message,
            "retry_after": e.response.headers.get("retry-after"),
            "should_retry": e.response.headers.get("x-should-retry"),
        }
    return {"class": None}


def main():
    base_url, key = sys.argv[1], sys.argv[2]
    # No retries: a 429 must surface as it is, not be retried after `retry-after`.
    client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, timeout=60)
    summary = {"sdk": anthropic.__version__}

    message = client.messages.create(
        model="claude-sonnet-4-20250514", max_tokens=1024, messages=MESSAGES
    )
    summary["create"] = {
        "model": message.model,
        "text": text_of(message),
        "stop_reason": message.stop_reason,
        "usage": usage(message.usage),
    }

    text, types, input_tokens, output_tokens = "", [], None, None
    for event in client.messages.create(
        model="claude-haiku-4-5", max_tokens=1024, messages=MESSAGES, stream=True
    ):
        types.append(event.type)
        if event.type == "message_start":
            input_tokens = event.message.usage.input_tokens
        elif event.type == "content_block_delta" and event.delta.type == "text_delta":
            text += event.delta.text
        elif event.type == "message_delta":
            output_tokens = event.usage.output_tokens
    summary["stream"] = {
        "text": text,
        "events": types,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
    }

    with client.messages.stream(
        model="claude-opus-4-1", max_tokens=1024, messages=MESSAGES
    ) as stream:
        deltas = "".join(stream.text_stream)
        final = stream.get_final_message()
    summary["helper"] = {
        "model": final.model,
        "deltas": deltas,
        "text": text_of(final),
        "stop_reason": final.stop_reason,
        "usage": usage(final.usage),
    }

    def over_limit():
        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=1024, messages=MESSAGES
        ) as stream:
            stream.get_final_message()

    summary["limit_error"] = refusal(over_limit)
    stranger = anthropic.Anthropic(
        base_url=base_url, api_key="tg_nobody_has_this_key", max_retries=0, timeout=60
    )
    summary["auth_error"] = refusal(
        lambda: stranger.messages.create(
            model="claude-haiku-4-5", max_tokens=1024, messages=MESSAGES
        )
    )

    json.dump(summary, sys.stdout)


if __name__ == "__main__":
    main()
