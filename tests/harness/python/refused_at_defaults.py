"""One call the gateway refuses, made through an official SDK at its default settings (default
retries, default timeouts), as an application that never heard of Tollgate would make it.

Usage: refused_at_defaults.py SDK BASE_URL TOLLGATE_KEY MODEL
SDK is one of openai, anthropic, google-genai.

Prints one JSON object: the exception's class and status (null for a call that succeeded), and
the seconds the call took. A call that does not return within 90 s ends the script with an
error: an SDK sleeping on a retry far longer than it was told to.
"""

import json
import signal
import sys
import time

PROMPT = "Say hello."


def prepare(sdk, base_url, key, model):
    """The SDK imported and its client built (not timed: importing an SDK takes a second on a
    busy machine); the call, to time."""
    if sdk == "openai":
        import openai

        client = openai.OpenAI(base_url=base_url, api_key=key)
        return lambda: client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}]
        )
    if sdk == "anthropic":
        import anthropic

        client = anthropic.Anthropic(base_url=base_url, api_key=key)
        return lambda: client.messages.create(
            model=model, max_tokens=256, messages=[{"role": "user", "content": PROMPT}]
        )
    if sdk == "google-genai":
        from google import genai
        from google.genai import types

        client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url))
        return lambda: client.models.generate_content(model=model, contents=PROMPT)
    raise SystemExit(f"unknown SDK {sdk}")


def status_of(error):
    for attribute in ("status_code", "code"):
        value = getattr(error, attribute, None)
        if isinstance(value, int):
            return value
    return None


def main():
    sdk, base_url, key, model = sys.argv[1:5]
    signal.alarm(90)
    request = prepare(sdk, base_url, key, model)
    started = time.monotonic()
    try:
        request()
        out = {"class": None, "status": None}
    except Exception as e:  # the SDK's own error class is what the test reads
        out = {"class": type(e).__name__, "status": status_of(e)}
    out["elapsed_s"] = time.monotonic() - started
    print(json.dumps(out))


if __name__ == "__main__":
    main()
