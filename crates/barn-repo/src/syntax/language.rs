//! BCP-47 language tags (RFC 5646), as used by `langs` fields.

use super::{SyntaxError, SyntaxKind, string_newtype};

/// RFC 5646 "irregular" grandfathered tags: registered before the current
/// grammar and not expressible in it, so they are matched as whole strings.
const IRREGULAR: [&str; 17] = [
    "en-GB-oed",
    "i-ami",
    "i-bnn",
    "i-default",
    "i-enochian",
    "i-hak",
    "i-klingon",
    "i-lux",
    "i-mingo",
    "i-navajo",
    "i-pwn",
    "i-tao",
    "i-tay",
    "i-tsu",
    "sgn-BE-FR",
    "sgn-BE-NL",
    "sgn-CH-DE",
];

const fn err(reason: &'static str) -> SyntaxError {
    SyntaxError::new(SyntaxKind::Language, reason)
}

/// A well-formed, valid BCP-47 language tag such as `pt-BR`.
///
/// Construction also enforces the RFC 5646 validity rule that no variant
/// and no extension singleton appears twice; [`Language::validate`] checks
/// only the syntax.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Language(String);

string_newtype!(Language, Language::check);

impl Language {
    /// Checks that `s` is a well-formed language tag, without allocating.
    ///
    /// Follows the RFC 5646 grammar with one restriction taken from the
    /// interop vectors: the primary language subtag must be 2-3 lowercase
    /// letters (so `JA` and reserved 4-8 letter subtags are rejected; the
    /// leading `i` or `sgn` of a grandfathered tag must be lowercase too),
    /// while a leading private-use `x` may be either case.
    pub fn validate(s: &str) -> Result<(), SyntaxError> {
        scan(s, &mut |_| Ok(()))
    }

    /// Parses `s`, also rejecting repeated variants or extension singletons
    /// (compared case-insensitively), which RFC 5646 makes invalid.
    pub fn parse(s: &str) -> Result<Language, SyntaxError> {
        s.parse()
    }

    /// Full check used by every constructor.
    fn check(s: &str) -> Result<(), SyntaxError> {
        // 36 possible singletons fit a bitset; variants are few in any real
        // tag, but sort rather than compare pairwise so that a hostile tag
        // with thousands of variants stays cheap.
        let mut singletons = 0u64;
        let mut variants: Vec<&str> = Vec::new();
        scan(s, &mut |part| {
            match part {
                Part::Variant(v) => variants.push(v),
                Part::Singleton(c) => {
                    // Base 36 maps 0-9 and a-z (either case) to 0..36.
                    let index = char::from(c).to_digit(36).unwrap_or(0);
                    let bit = 1u64 << index;
                    if singletons & bit != 0 {
                        return Err(err("repeated extension singleton"));
                    }
                    singletons |= bit;
                }
            }
            Ok(())
        })?;
        variants.sort_unstable_by(|a, b| cmp_ignore_ascii_case(a, b));
        if variants.windows(2).any(|w| w[0].eq_ignore_ascii_case(w[1])) {
            return Err(err("repeated variant subtag"));
        }
        Ok(())
    }

    /// The primary language subtag, e.g. `pt` for `pt-BR` (`x` or `i` for
    /// private-use and grandfathered tags).
    pub fn primary(&self) -> &str {
        self.0.split('-').next().unwrap_or_default()
    }
}

fn cmp_ignore_ascii_case(a: &str, b: &str) -> std::cmp::Ordering {
    a.bytes()
        .map(|c| c.to_ascii_lowercase())
        .cmp(b.bytes().map(|c| c.to_ascii_lowercase()))
}

/// Subtags whose repetition makes a tag invalid.
enum Part<'a> {
    Variant(&'a str),
    Singleton(u8),
}

fn is_alpha(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_alphabetic())
}

fn is_alnum(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_alphanumeric())
}

fn is_digits(s: &str) -> bool {
    s.bytes().all(|c| c.is_ascii_digit())
}

/// Checks the grammar, reporting variants and singletons to `on_part`.
fn scan<'a>(
    s: &'a str,
    on_part: &mut dyn FnMut(Part<'a>) -> Result<(), SyntaxError>,
) -> Result<(), SyntaxError> {
    let mut subtags = s.split('-').peekable();
    let primary = subtags.next().unwrap_or_default();
    let primary_is_lowercase = primary.bytes().all(|c| c.is_ascii_lowercase());
    if primary_is_lowercase && IRREGULAR.iter().any(|g| g.eq_ignore_ascii_case(s)) {
        return Ok(());
    }
    if primary.eq_ignore_ascii_case("x") {
        return private_use(subtags);
    }
    if !(2..=3).contains(&primary.len()) || !primary_is_lowercase {
        return Err(err("primary language must be 2-3 lowercase letters"));
    }

    // extlang: up to three 3-letter subtags.
    for _ in 0..3 {
        if subtags.next_if(|t| t.len() == 3 && is_alpha(t)).is_none() {
            break;
        }
    }
    // script
    subtags.next_if(|t| t.len() == 4 && is_alpha(t));
    // region
    subtags.next_if(|t| (t.len() == 2 && is_alpha(t)) || (t.len() == 3 && is_digits(t)));
    // variants
    while let Some(v) = subtags.next_if(|t| {
        ((5..=8).contains(&t.len()) && is_alnum(t))
            || (t.len() == 4 && t.starts_with(|c: char| c.is_ascii_digit()) && is_alnum(t))
    }) {
        on_part(Part::Variant(v))?;
    }
    // extensions: a singleton other than x, then one or more 2-8 char subtags.
    while let Some(singleton) =
        subtags.next_if(|t| t.len() == 1 && is_alnum(t) && !t.eq_ignore_ascii_case("x"))
    {
        let mut count = 0;
        while subtags
            .next_if(|t| (2..=8).contains(&t.len()) && is_alnum(t))
            .is_some()
        {
            count += 1;
        }
        if count == 0 {
            return Err(err("extension singleton must be followed by a subtag"));
        }
        on_part(Part::Singleton(singleton.as_bytes()[0]))?;
    }
    match subtags.next() {
        None => Ok(()),
        Some(t) if t.eq_ignore_ascii_case("x") => private_use(subtags),
        Some("") => Err(err("empty subtag")),
        Some(_) => Err(err("subtag out of place or malformed")),
    }
}

/// Checks the subtags after an `x` singleton: one or more of 1-8 alphanumerics.
fn private_use<'a>(mut rest: impl Iterator<Item = &'a str>) -> Result<(), SyntaxError> {
    let mut count = 0;
    for t in rest.by_ref() {
        if !(1..=8).contains(&t.len()) || !is_alnum(t) {
            return Err(err("private-use subtags must be 1-8 letters or digits"));
        }
        count += 1;
    }
    if count == 0 {
        return Err(err("private-use singleton must be followed by a subtag"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_grammar_corners() {
        for good in [
            "zh-yue",
            "zh-cmn-Hans-CN",
            "ar-aao-abc-abd",
            "sr-Latn",
            "de-1996",
            "en-US-u-islamcal",
            "x-whatever",
            "x-a-b-c",
            "en-x-a-x",
            "i-DEFAULT",
            "sgn-be-nl",
            "en-a-bbb-x-a-ccc",
            "es-419-u-nu-latn",
        ] {
            assert!(
                Language::validate(good).is_ok(),
                "{good:?} should be well-formed"
            );
            assert!(Language::parse(good).is_ok(), "{good:?} should be valid");
        }
    }

    #[test]
    fn rejects_grammar_corners() {
        for bad in [
            "",
            "-",
            "en-",
            "en--US",
            "x",
            "x-",
            "en-x",
            "en-x-123456789",
            "en-a",
            "en-a-x-foo",
            "i-foo",
            "en-Latn-Latn",
            "en-US-US",
            "en-123456789",
            "ar-aao-abc-abd-abe",
            "en_US",
            "en US",
            "aé",
            "en-b-é",
            "I-DEFAULT",
            "SGN-BE-NL",
        ] {
            assert!(
                Language::validate(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn duplicate_checks_are_parse_only() {
        for s in [
            "de-1901-1901",
            "en-a-foo-a-bar",
            "en-a-foo-A-bar",
            "en-rozaj-ROZAJ",
        ] {
            assert!(Language::validate(s).is_ok(), "{s:?} is well-formed");
            assert!(Language::parse(s).is_err(), "{s:?} is not valid");
        }
        // Repeats inside private use are fine.
        assert!(Language::parse("en-x-a-a").is_ok());
        // Singletons in different positions are distinct.
        assert!(Language::parse("en-a-foo-b-foo").is_ok());
        // Many distinct variants stay accepted.
        let many: String = (0..1000).fold(String::from("en"), |mut acc, i| {
            acc.push_str(&format!("-v{i:04}"));
            acc
        });
        assert!(Language::parse(&many).is_ok());
    }

    #[test]
    fn primary() {
        assert_eq!(Language::parse("pt-BR").unwrap().primary(), "pt");
        assert_eq!(Language::parse("i-navajo").unwrap().primary(), "i");
    }
}
