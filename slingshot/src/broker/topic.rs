//! Topic routing as AMQP defines it: does a routing key match a binding pattern (`*` one word, `#` any number).

/// Whether `key` matches `pattern`: both are dot-separated words; in the
/// pattern `*` stands for exactly one word and `#` for zero or more.
pub(crate) fn matches(pattern: &str, key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = key.split('.').collect();
    matches_words(&pattern, &key)
}

fn matches_words(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| matches_words(rest, &key[skip..])),
        Some((&word, rest)) => match key.split_first() {
            Some((&first, key_rest)) => (word == "*" || word == first) && matches_words(rest, key_rest),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn words_stars_and_hashes_match_as_amqp_says() {
        for (pattern, key, expected) in [
            ("tokenize.progress", "tokenize.progress", true),
            ("tokenize.progress", "tokenize.done", false),
            ("*.invalid-input", "ingest.invalid-input", true),
            ("*.invalid-input", "a.b.invalid-input", false),
            ("#", "anything.at.all", true),
            ("tokenize.#", "tokenize", true),
            ("tokenize.#", "tokenize.progress.50", true),
            ("#.progress", "progress", true),
            ("*", "a.b", false),
            ("a.*.c", "a.b.c", true),
        ] {
            assert_eq!(matches(pattern, key), expected, "{pattern} ~ {key}");
        }
    }
}
