//! Mistral: chat, FIM and agents completions, and embeddings. The wire format is OpenAI's chat
//! format (`usage.prompt_tokens` / `completion_tokens`, `data: [DONE]`), so the handler is
//! [`crate::openai::Chat`]; what differs is where the usage rides in a stream (on the last
//! regular chunk, next to `finish_reason`, with no `stream_options` needed) and the cached-token
//! spellings (`prompt_tokens_details.cached_tokens`, or the older `num_cached_tokens`).

use crate::handler::Handler;
use crate::openai::Chat;

pub(crate) fn handler(path: &str) -> Handler {
    let path = path.trim_end_matches('/');
    let metered = [
        "/chat/completions",
        "/fim/completions",
        "/agents/completions",
        "/embeddings",
    ]
    .iter()
    .any(|suffix| path.ends_with(suffix));
    if metered {
        Handler::Chat(Chat::default())
    } else {
        Handler::Unmetered(Default::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_embeddings_are_metered() {
        assert!(matches!(handler("/v1/chat/completions"), Handler::Chat(_)));
        assert!(matches!(handler("/v1/fim/completions"), Handler::Chat(_)));
        assert!(matches!(handler("/v1/embeddings"), Handler::Chat(_)));
        assert!(matches!(handler("/v1/models"), Handler::Unmetered(_)));
    }
}
