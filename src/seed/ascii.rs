//! Spelling names for email addresses: `José` → `jose`, `O'Brien` → `obrien`.
//!
//! HubSpot and most mail systems accept Unicode local parts only reluctantly, and real company
//! addresses are almost always plain ASCII, so seeded emails use lower-case ASCII letters only.

/// Why a name has no usable ASCII spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameError {
    /// Nothing left once separators are dropped (e.g. an empty or all-punctuation name).
    NoLetters,
    /// A letter this table cannot spell in ASCII (e.g. another script).
    Unsupported(char),
}

/// Lower-case ASCII letters and digits of `name`: accents stripped, spaces, apostrophes,
/// hyphens and dots dropped.
pub(super) fn ascii_slug(name: &str) -> Result<String, NameError> {
    let mut slug = String::with_capacity(name.len());
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if let Some(spelled) = transliterate(c) {
            slug.push_str(spelled);
        } else if !is_separator(c) {
            return Err(NameError::Unsupported(c));
        }
    }
    if slug.is_empty() {
        Err(NameError::NoLetters)
    } else {
        Ok(slug)
    }
}

/// Characters that join parts of a name and have no place in an email's local part.
fn is_separator(c: char) -> bool {
    // U+0307 is the combining dot `İ` lower-cases to; U+2019 is the typographic apostrophe.
    matches!(c, ' ' | '\'' | '\u{2019}' | '-' | '.' | '\u{0307}')
}

/// The usual ASCII spelling of a lower-case Latin letter with diacritics.
fn transliterate(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'æ' => "ae",
        'ç' | 'ć' | 'č' => "c",
        'ď' | 'đ' | 'ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ė' | 'ę' | 'ě' => "e",
        'ğ' => "g",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'į' | 'ı' => "i",
        'ł' => "l",
        'ñ' | 'ń' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => "o",
        'œ' => "oe",
        'ř' => "r",
        'ś' | 'š' | 'ş' | 'ș' => "s",
        'ß' => "ss",
        'ť' | 'ţ' | 'ț' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' => "u",
        'ý' | 'ÿ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        'þ' => "th",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accents_are_stripped_and_separators_dropped() {
        assert_eq!(ascii_slug("José").unwrap(), "jose");
        assert_eq!(ascii_slug("Jørgensen").unwrap(), "jorgensen");
        assert_eq!(ascii_slug("Łukasz").unwrap(), "lukasz");
        assert_eq!(ascii_slug("Yılmaz").unwrap(), "yilmaz");
        assert_eq!(ascii_slug("İnci").unwrap(), "inci");
        assert_eq!(ascii_slug("O'Brien").unwrap(), "obrien");
        assert_eq!(ascii_slug("Min-jun").unwrap(), "minjun");
        assert_eq!(ascii_slug("Van der Berg").unwrap(), "vanderberg");
        assert_eq!(ascii_slug("Strauß").unwrap(), "strauss");
    }

    #[test]
    fn names_without_an_ascii_spelling_are_refused() {
        assert_eq!(ascii_slug("王"), Err(NameError::Unsupported('王')));
        assert_eq!(ascii_slug("' -"), Err(NameError::NoLetters));
        assert_eq!(ascii_slug(""), Err(NameError::NoLetters));
    }
}
