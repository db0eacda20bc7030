//! A call billed more than its reservation held: the one way a limit can be passed. Admission
//! reserves the most a call can cost by its provider's published rules (`tollgate_domain::bound`);
//! a charge its request does not bound (a PDF's pages, a job's credits as its pages complete, a
//! prompt's image counted in tokens beyond the body's bytes) is still billed as the provider
//! reports it, and the limit can then pass its value by that call's excess. Such a call is
//! counted (`tollgate_reservation_exceeded_total`) and logged with what its request asked for:
//! the options the price entry's bound reads, never the prompt or a key.
//!
//! The log line says which kind of excess it is ([`ExcessKind`]). An LLM call whose reported
//! input passed the body-bytes estimate (an image passed by URL, a file by id) is expected of
//! such requests: logged at info. Any other excess (a per-call provider's charge beyond its
//! rule, an LLM call's output beyond its cap) says a bound is wrong or incomplete: warn.

use tollgate_domain::{Amount, Expect, FieldValue, ModelPrice};
use tollgate_usage::RequestFacts;

/// Which part of a call passed its reservation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExcessKind {
    /// A token-billed call's reported input beyond its body's bytes, the input's bound (an
    /// image passed by URL is counted in tokens the body does not carry).
    InputBeyondBody,
    /// A token-billed call's tokens beyond its bound otherwise (its output).
    Tokens,
    /// A per-call provider's charge beyond its rule's bound.
    Cost,
}

impl ExcessKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExcessKind::InputBeyondBody => "input_beyond_body_estimate",
            ExcessKind::Tokens => "tokens",
            ExcessKind::Cost => "cost",
        }
    }
}

/// A call billed beyond its reservation: which kind of excess, and in words for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Excess {
    pub kind: ExcessKind,
    pub words: String,
}

/// What a call billed beyond its reservation; `None` when it stayed within it. `input_tokens`
/// is the call's billed input.
pub fn exceeded(
    reserved: Amount,
    actual: Amount,
    input_tokens: u64,
    facts: &RequestFacts,
    price: Option<&ModelPrice>,
) -> Option<Excess> {
    if actual.cost_nanousd <= reserved.cost_nanousd && actual.tokens <= reserved.tokens {
        return None;
    }
    let token_billed = reserved.tokens > 0;
    let kind = if token_billed && input_tokens > facts.input_tokens_bound {
        ExcessKind::InputBeyondBody
    } else if token_billed {
        ExcessKind::Tokens
    } else {
        ExcessKind::Cost
    };
    let words = format!(
        "reserved {} nano-USD and {} tokens, billed {} nano-USD and {} tokens; request: {}",
        reserved.cost_nanousd,
        reserved.tokens,
        actual.cost_nanousd,
        actual.tokens,
        request_facts(facts, price)
    );
    Some(Excess { kind, words })
}

/// The request's size and the options its bound reads (`numResults=25 type=deep`).
fn request_facts(facts: &RequestFacts, price: Option<&ModelPrice>) -> String {
    let mut words = vec![format!("input_bound={}", facts.input_tokens_bound)];
    if let Some(cap) = facts.max_output_tokens {
        words.push(format!("max_output_tokens={cap}"));
    }
    let names = price
        .and_then(|p| p.bound.as_ref())
        .into_iter()
        .flat_map(|b| &b.terms)
        .flat_map(|t| {
            let conditions = t.when.iter().chain(&t.unless);
            t.per
                .iter()
                .chain(conditions.map(|(name, _): &(String, Expect)| name))
        });
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        if !seen.insert(name) {
            continue;
        }
        let Some(fields) = &facts.fields else { break };
        let value = match fields.fields.get(name) {
            None => continue,
            Some(FieldValue::Count(n)) => n.to_string(),
            Some(FieldValue::Text(t)) => t.clone(),
            Some(FieldValue::Flag(b)) => b.to_string(),
            Some(FieldValue::List { len, texts }) => format!("{len}:[{}]", texts.join(",")),
            Some(FieldValue::Other) => "set".to_owned(),
        };
        words.push(format!("{name}={value}"));
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_domain::Provider;

    fn amount(cost_nanousd: u64, tokens: u64) -> Amount {
        Amount {
            calls: 1,
            tokens,
            cost_nanousd,
        }
    }

    fn exa() -> (RequestFacts, Option<ModelPrice>) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway.toml");
        let env = |name: &str| name.ends_with("_API_KEY").then(|| "sk-test".to_owned());
        let config = tollgate_config::load_with_env(&path, &env).unwrap().config;
        let body = br#"{"query":"a private question","numResults":25,"type":"deep"}"#;
        let facts = RequestFacts::read(Provider::Exa, "/search", body).unwrap();
        let price = config
            .prices
            .lookup(Provider::Exa, "search")
            .map(|m| m.price.clone());
        (facts, price)
    }

    #[test]
    fn a_call_within_its_reservation_is_not_exceeded() {
        let (facts, price) = exa();
        let reserved = amount(40_000_000, 0);
        assert_eq!(
            exceeded(reserved, amount(40_000_000, 0), 0, &facts, price.as_ref()),
            None
        );
        assert_eq!(
            exceeded(reserved, amount(1, 0), 0, &facts, price.as_ref()),
            None
        );
    }

    #[test]
    fn the_warning_names_the_excess_and_the_options_never_the_query() {
        let (facts, price) = exa();
        let excess = exceeded(
            amount(30_000_000, 0),
            amount(31_000_000, 0),
            0,
            &facts,
            price.as_ref(),
        )
        .unwrap();
        assert_eq!(excess.kind, ExcessKind::Cost);
        let said = excess.words;
        assert!(said.starts_with("reserved 30000000 nano-USD and 0 tokens, billed 31000000"));
        assert!(said.contains("numResults=25"), "{said}");
        assert!(said.contains("type=deep"), "{said}");
        assert!(!said.contains("private"), "{said}");
        // Tokens beyond the reservation count too (a prompt's image priced in tokens).
        let chat = RequestFacts::read(Provider::OpenAi, "/v1/chat/completions", b"{}").unwrap();
        let excess = exceeded(amount(9, 100), amount(9, 101), 1, &chat, None).unwrap();
        assert!(
            excess.words.ends_with("request: input_bound=2"),
            "{excess:?}"
        );
        assert_eq!(excess.kind, ExcessKind::Tokens);
    }

    #[test]
    fn an_llm_input_beyond_its_body_estimate_is_its_own_kind() {
        // A 2-byte body whose prompt (an image by URL) was billed 1,000 input tokens.
        let chat = RequestFacts::read(Provider::OpenAi, "/v1/chat/completions", b"{}").unwrap();
        let excess = exceeded(amount(9, 100), amount(20, 1_010), 1_000, &chat, None).unwrap();
        assert_eq!(excess.kind, ExcessKind::InputBeyondBody);
        assert_eq!(excess.kind.as_str(), "input_beyond_body_estimate");
    }
}
