"""The official `openai` Python SDK pointed at Tollgate, as an application would use it.

Usage: openai_client.py BASE_URL TOLLGATE_KEY

Makes a plain chat completion, a `stream=True` completion, a completion through the SDK's
`chat.completions.stream` helper, then one call over the plan's limit and one with an unknown
key, and prints what the SDK surfaced as one JSON object on stdout. Anything unexpected (a
normal call that raises, a response the SDK cannot parse) ends the script with a traceback.
"""

import json
import sys

import openai

MESSAGES = [{"role": "user", "content": "Say hello."}]


def usage(u):
    """The counts an application would read (and bill by) from the SDK's usage object."""
    if u is None:
        return None
    details = u.prompt_tokens_details
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.total_tokens,
        "cached_tokens": details.cached_tokens if details is not None else None,
    }


def refusal(call):
    """What the SDK raised for a call the gateway refuses (`class` is None if nothing was)."""
    try:
        call()
    except openai.APIStatusError as e:
        return {
            "class": type(e).__name__,
            "status": e.status_code,
            "type": e.type,
            "code": e.code,
            "message": e.message,
            "retry_after": e.response.headers.get("retry-after"),
            "should_retry": e.response.headers.get("x-should-retry"),
        }
    return {"class": None}


def main():
    base_url, key = sys.argv[1], sys.argv[2]
    # No retries: a 429 must surface as it is, not be retried after `retry-after`.
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)
    summary = {"sdk": openai.__version__}

    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    summary["create"] = {
        "model": completion.model,
        "text": completion.choices[0].message.content,
        "finish_reason": completion.choices[0].finish_reason,
        "usage": usage(completion.usage),
    }

    # stream=True without stream_options: as from OpenAI, no usage chunk reaches the SDK (the
    # gateway asks for one to meter the stream and keeps it from the client).
    text, chunks, last_usage = "", 0, None
    for chunk in client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    ):
        chunks += 1
        for choice in chunk.choices:
            text += choice.delta.content or ""
        if chunk.usage is not None:
            last_usage = chunk.usage
    summary["stream"] = {"text": text, "chunks": chunks, "usage": usage(last_usage)}

    deltas = ""
    with client.chat.completions.stream(
        model="gpt-4.1-mini",
        messages=MESSAGES,
        stream_options={"include_usage": True},
    ) as stream:
        for event in stream:
            if event.type == "content.delta":
                deltas += event.delta
        final = stream.get_final_completion()
    summary["helper"] = {
        "model": final.model,
        "deltas": deltas,
        "text": final.choices[0].message.content,
        "usage": usage(final.usage),
    }

    summary["limit_error"] = refusal(
        lambda: client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    )
    stranger = openai.OpenAI(
        base_url=base_url, api_key="tg_nobody_has_this_key", max_retries=0, timeout=60
    )
    summary["auth_error"] = refusal(
        lambda: stranger.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    )

    json.dump(summary, sys.stdout)


if __name__ == "__main__":
    main()
