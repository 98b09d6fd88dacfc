//! Boxed text tables: sized to their content when all rows are known, or to the terminal when
//! rows stream in; a value wider than its column wraps onto more lines.

use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// The narrowest a column is squeezed to when the table is wider than the terminal.
const MIN_COLUMN: usize = 6;

/// Column widths, and the lines that draw a table with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    widths: Vec<usize>,
}

impl Layout {
    /// Widths that fit `headers` and every row, shrunk to `max_width` characters in all.
    pub fn fitted(headers: &[String], rows: &[Vec<String>], max_width: usize) -> Layout {
        let mut widths: Vec<usize> = headers.iter().map(|h| text_width(h)).collect();
        for row in rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(text_width(cell));
                }
            }
        }
        Layout::shrunk(widths, max_width)
    }

    /// Widths for rows not seen yet: each column gets `natural` characters, or its header's
    /// width if wider, shrunk to `max_width` in all.
    pub fn streaming(headers: &[String], natural: usize, max_width: usize) -> Layout {
        let widths = headers.iter().map(|h| text_width(h).max(natural)).collect();
        Layout::shrunk(widths, max_width)
    }

    fn shrunk(mut widths: Vec<usize>, max_width: usize) -> Layout {
        // Each column costs its width plus 3 for "| " and " "; the table one more for "|".
        let budget = max_width.saturating_sub(1 + 3 * widths.len());
        while widths.iter().sum::<usize>() > budget {
            let Some((widest, &width)) = widths.iter().enumerate().max_by_key(|(_, w)| **w) else {
                break;
            };
            if width <= MIN_COLUMN {
                break;
            }
            widths[widest] = width - 1;
        }
        Layout { widths }
    }

    /// `+------+----+`
    pub fn border(&self) -> String {
        let mut line = String::from("+");
        for width in &self.widths {
            line.push_str(&"-".repeat(width + 2));
            line.push('+');
        }
        line.push('\n');
        line
    }

    /// `| a    | b  |`, over as many lines as the widest wrapped cell needs.
    pub fn row(&self, cells: &[String]) -> String {
        let wrapped: Vec<Vec<String>> = self
            .widths
            .iter()
            .enumerate()
            .map(|(i, width)| wrap(cells.get(i).map(String::as_str).unwrap_or(""), *width))
            .collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
        let mut text = String::new();
        for line in 0..height {
            text.push('|');
            for (i, width) in self.widths.iter().enumerate() {
                let part = wrapped[i].get(line).map(String::as_str).unwrap_or("");
                text.push(' ');
                text.push_str(part);
                text.push_str(&" ".repeat(width.saturating_sub(text_width(part)) + 1));
                text.push('|');
            }
            text.push('\n');
        }
        text
    }

    /// The top border, the header row and the line under it.
    pub fn header(&self, headers: &[String]) -> String {
        format!("{}{}{}", self.border(), self.row(headers), self.border())
    }
}

/// A whole table, sized to its content within `max_width`.
pub fn render(headers: &[String], rows: &[Vec<String>], max_width: usize) -> String {
    let layout = Layout::fitted(headers, rows, max_width);
    let mut text = layout.header(headers);
    for row in rows {
        text.push_str(&layout.row(row));
    }
    text.push_str(&layout.border());
    text
}

/// Two columns of label and value, for a single record (`DESCRIBE`'s header lines).
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let label_width = pairs.iter().map(|(k, _)| text_width(k)).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k}{} : {v}\n", " ".repeat(label_width - text_width(k))))
        .collect()
}

fn text_width(text: &str) -> usize {
    text.lines().map(UnicodeWidthStr::width).max().unwrap_or(0)
}

/// `text` broken into lines of at most `width` columns: at its own line breaks, then at spaces
/// where it can, and mid-word where a word is longer than the line.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let mut line = String::new();
        let mut line_width = 0;
        for word in paragraph.split_inclusive(' ') {
            let word_width = UnicodeWidthStr::width(word);
            if line_width + word_width.min(width) > width && !line.is_empty() {
                lines.push(line.trim_end().to_string());
                line.clear();
                line_width = 0;
            }
            for c in word.chars() {
                let w = c.width().unwrap_or(0);
                if line_width + w > width {
                    lines.push(std::mem::take(&mut line));
                    line_width = 0;
                }
                line.push(c);
                line_width += w;
            }
        }
        lines.push(line.trim_end().to_string());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tables_are_sized_to_their_content() {
        let text = render(
            &strings(&["ID", "NAME"]),
            &[strings(&["1", "alice"]), strings(&["22", "bo"])],
            80,
        );
        assert_eq!(
            text,
            "+----+-------+\n\
             | ID | NAME  |\n\
             +----+-------+\n\
             | 1  | alice |\n\
             | 22 | bo    |\n\
             +----+-------+\n"
        );
    }

    #[test]
    fn long_values_wrap_to_fit_the_width() {
        let long = "the quick brown fox jumps over the lazy dog";
        let text = render(&strings(&["K", "TEXT"]), &[strings(&["1", long])], 30);
        for line in text.lines() {
            assert!(line.chars().count() <= 30, "{line:?} is wider than 30");
        }
        let joined: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("| 1") || l.starts_with("|  "))
            .map(|l| l.split('|').nth(2).unwrap_or("").trim())
            .collect();
        assert_eq!(joined.join(" "), long);
    }

    #[test]
    fn words_longer_than_a_line_are_broken() {
        assert_eq!(wrap("abcdefgh", 3), vec!["abc", "def", "gh"]);
        assert_eq!(wrap("ab cd\nef", 10), vec!["ab cd", "ef"]);
        assert_eq!(wrap("", 4), vec![""]);
    }

    #[test]
    fn wide_characters_count_double() {
        let layout = Layout::fitted(&strings(&["名前"]), &[], 80);
        assert_eq!(layout.border(), "+------+\n");
    }

    #[test]
    fn streaming_columns_share_the_terminal() {
        let layout = Layout::streaming(&strings(&["A", "B", "C"]), 20, 40);
        assert!(layout.border().trim_end().chars().count() <= 40);
    }

    proptest::proptest! {
        #[test]
        fn wrapped_lines_fit_and_keep_every_character(text in "[a-z é名\n]{0,80}", width in 2usize..30) {
            let lines = wrap(&text, width);
            for line in &lines {
                proptest::prop_assert!(UnicodeWidthStr::width(line.as_str()) <= width, "{line:?}");
            }
            let kept: String = lines.concat().chars().filter(|c| !c.is_whitespace()).collect();
            let given: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            proptest::prop_assert_eq!(kept, given);
        }
    }

    #[test]
    fn key_values_align_their_labels() {
        assert_eq!(
            key_values(&[("Name", "S".into()), ("Key format", "KAFKA".into())]),
            "Name       : S\nKey format : KAFKA\n"
        );
    }
}
