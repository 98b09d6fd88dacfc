//! The prompt: rustyline with multi-line statements, a history file, Ctrl-R search, and
//! completion of keywords, commands and the server's names.

use std::path::PathBuf;

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::{FileHistory, History, SearchDirection};
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{CompletionType, Config, Context, Editor};

use crate::input::split;
use crate::shell::{COMMANDS, Flow, Names, Shell};

/// ksqlDB's keywords, offered by completion.
const KEYWORDS: &[&str] = &[
    "ADVANCE",
    "ALL",
    "AND",
    "ARRAY",
    "AS",
    "BETWEEN",
    "BIGINT",
    "BOOLEAN",
    "BY",
    "BYTES",
    "CASE",
    "CAST",
    "CHANGES",
    "CREATE",
    "DATE",
    "DAYS",
    "DECIMAL",
    "DEFINE",
    "DELETE",
    "DESCRIBE",
    "DOUBLE",
    "DROP",
    "ELSE",
    "EMIT",
    "END",
    "EXISTS",
    "EXPLAIN",
    "EXTENDED",
    "FINAL",
    "FROM",
    "FULL",
    "FUNCTIONS",
    "GRACE",
    "GROUP",
    "HAVING",
    "HOPPING",
    "HOURS",
    "IF",
    "IN",
    "INNER",
    "INSERT",
    "INT",
    "INTEGER",
    "INTO",
    "IS",
    "JOIN",
    "KAFKA_TOPIC",
    "KEY",
    "KEY_FORMAT",
    "LEFT",
    "LIKE",
    "LIMIT",
    "LIST",
    "MAP",
    "MILLISECONDS",
    "MINUTES",
    "NOT",
    "NULL",
    "ON",
    "OR",
    "OUTER",
    "PARTITION",
    "PARTITIONS",
    "PERIOD",
    "PRIMARY",
    "PRINT",
    "PROPERTIES",
    "QUERIES",
    "REPLACE",
    "REPLICAS",
    "RETENTION",
    "RIGHT",
    "ROWKEY",
    "ROWTIME",
    "SECONDS",
    "SELECT",
    "SESSION",
    "SET",
    "SHOW",
    "SIZE",
    "SOURCE",
    "STREAM",
    "STREAMS",
    "STRING",
    "STRUCT",
    "TABLE",
    "TABLES",
    "TERMINATE",
    "THEN",
    "TIME",
    "TIMESTAMP",
    "TIMESTAMP_FORMAT",
    "TOPIC",
    "TOPICS",
    "TUMBLING",
    "TYPE",
    "TYPES",
    "UNDEFINE",
    "UNSET",
    "VALUE_FORMAT",
    "VALUES",
    "VARCHAR",
    "VARIABLES",
    "WHEN",
    "WHERE",
    "WINDOW",
    "WINDOWEND",
    "WINDOWSTART",
    "WITH",
    "WITHIN",
    "WRAP_SINGLE_VALUE",
];

/// Completion and statement boundaries for the prompt.
pub struct PromptHelper {
    names: Names,
}

impl PromptHelper {
    /// A helper completing from `names` as well as keywords and commands.
    pub fn new(names: Names) -> PromptHelper {
        PromptHelper { names }
    }

    /// The candidates for the word that ends at `pos` in `line`, and where that word starts.
    pub fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let before = &line[..pos];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map(|i| i + before[i..].chars().next().map_or(1, char::len_utf8))
            .unwrap_or(0);
        let prefix = &before[start..];
        if prefix.is_empty() {
            return (start, Vec::new());
        }
        let lower = prefix.chars().all(|c| !c.is_uppercase());
        let upper_prefix = prefix.to_uppercase();
        let first_word = before[..start].trim().is_empty();
        let mut candidates: Vec<String> = KEYWORDS
            .iter()
            .filter(|k| k.starts_with(&upper_prefix))
            .map(|k| {
                if lower {
                    k.to_lowercase()
                } else {
                    k.to_string()
                }
            })
            .collect();
        candidates.extend(
            self.names
                .read()
                .iter()
                .filter(|n| n.to_uppercase().starts_with(&upper_prefix))
                .cloned(),
        );
        if first_word {
            candidates.extend(
                COMMANDS
                    .iter()
                    .filter(|c| c.starts_with(&prefix.to_lowercase()))
                    .map(|c| c.to_string()),
            );
        }
        candidates.sort();
        candidates.dedup();
        (start, candidates)
    }
}

impl Completer for PromptHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        Ok(self.candidates(line, pos))
    }
}

impl Hinter for PromptHelper {
    type Hint = String;
}

impl Highlighter for PromptHelper {}

impl Validator for PromptHelper {
    /// Enter on an unfinished statement starts a new line of the same statement.
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        Ok(if is_complete(ctx.input()) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl rustyline::Helper for PromptHelper {}

/// Whether typed text is ready to run: a built-in command, or statements ending in `;`.
pub fn is_complete(text: &str) -> bool {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return true;
    }
    let first = trimmed
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_end_matches(';')
        .to_ascii_lowercase();
    if COMMANDS.contains(&first.as_str()) {
        return true;
    }
    let split = split(text);
    !split.open && split.rest.is_empty()
}

const BANNER: &str = r"
   ___    _    _
  | __|__| |__| |_  _
  | _|/ _` / _` | || |
  |___\__,_\__,_|\_, |
                 |__/
";

/// Runs the prompt until `exit` or Ctrl-D.
pub fn run(mut shell: Shell, history: Option<PathBuf>) -> Result<(), ReadlineError> {
    let config = Config::builder()
        .history_ignore_dups(true)?
        .max_history_size(10_000)?
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        .build();
    let mut editor: Editor<PromptHelper, FileHistory> = Editor::with_config(config)?;
    editor.set_helper(Some(PromptHelper::new(shell.names())));
    if let Some(path) = &history
        && path.exists()
        && let Err(e) = editor.load_history(path)
    {
        shell.print(&format!(
            "Cannot read the history file {}: {e}\n",
            path.display()
        ));
    }
    if let Some((width, _)) = editor.dimensions() {
        shell.set_width(usize::from(width));
    }
    let server = match shell.server_version() {
        Ok(version) => format!("Server v{version} located at {}", shell.url()),
        Err(e) => format!("{e}\n(the shell connects when the server is up)"),
    };
    shell.print(&format!(
        "{BANNER}\nEddy: streaming SQL in ksqlDB's dialect.\nCLI v{}, {server}\n\n\
         Having trouble? Type 'help' for a rundown of how things work.\n\n",
        env!("CARGO_PKG_VERSION")
    ));
    shell.refresh_names();
    loop {
        if let Some((width, _)) = editor.dimensions() {
            shell.set_width(usize::from(width));
        }
        match editor.readline("eddy> ") {
            Ok(line) => {
                if line.trim().is_empty() {
                    continue;
                }
                editor.add_history_entry(line.as_str())?;
                if let Some(path) = &history {
                    // Saved at once, so a killed shell keeps what was typed.
                    let _ = editor.save_history(path);
                }
                if line
                    .trim()
                    .trim_end_matches(';')
                    .eq_ignore_ascii_case("history")
                {
                    let past = editor.history();
                    let mut text = String::new();
                    for index in 0..past.len() {
                        if let Ok(Some(entry)) = past.get(index, SearchDirection::Forward) {
                            text.push_str(&format!("{:>5}  {}\n", index + 1, entry.entry));
                        }
                    }
                    shell.print(&text);
                    continue;
                }
                if let Ok(Flow::Exit) = shell.execute(&line) {
                    break;
                }
            }
            // Ctrl-C at the prompt drops what was typed, as in a shell.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e),
        }
    }
    shell.print("Exiting Eddy.\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_are_complete_at_their_terminator() {
        assert!(!is_complete("CREATE STREAM s (\n id INT KEY"));
        assert!(is_complete(
            "CREATE STREAM s (\n id INT KEY) WITH (kafka_topic='s');"
        ));
        assert!(!is_complete("SELECT ';"));
        assert!(is_complete("SELECT 1; -- trailing comment"));
        assert!(is_complete("exit"));
        assert!(is_complete("  help  "));
        assert!(is_complete(""));
    }

    #[test]
    fn completion_offers_keywords_names_and_commands() {
        let names = Names::default();
        names.write().push("PAGEVIEWS".into());
        let helper = PromptHelper::new(names);
        assert_eq!(
            helper.candidates("SELECT * FROM PAGE", 18),
            (14, vec!["PAGEVIEWS".to_string()])
        );
        let (start, words) = helper.candidates("sel", 3);
        assert_eq!(start, 0);
        assert!(words.contains(&"select".to_string()));
        let (_, words) = helper.candidates("ex", 2);
        assert!(words.contains(&"exit".to_string()));
        assert!(words.contains(&"explain".to_string()));
        let (_, words) = helper.candidates("SELECT ex", 9);
        assert!(!words.contains(&"exit".to_string()));
        assert_eq!(helper.candidates("SELECT ", 7).1, Vec::<String>::new());
    }
}
