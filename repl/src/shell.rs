//! The shell's session: it runs what the user typed (built-in commands, `SET` / `DEFINE` held
//! client-side, queries streamed, other statements sent to `/ksql`) and prints the answers.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;

use crate::client::{Client, ClientError, QueryItem, RequestContext};
use crate::input::{Token, error_position, split, tokens};
use crate::render::{self, OutputFormat, cell};
use crate::table::{self, Layout};

/// What the shell does after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next line.
    Continue,
    /// The user asked to leave.
    Exit,
}

/// A statement or command failed; its message has been printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

/// The built-in commands, which need no `;`.
pub const COMMANDS: &[&str] = &[
    "help", "exit", "quit", "clear", "history", "server", "output", "spool", "version", "run",
];

/// Names the completer offers besides keywords: sources, columns and functions.
pub type Names = Arc<RwLock<Vec<String>>>;

/// Where output goes: standard output, and the spool file while one is open.
struct Output {
    spool: Option<(PathBuf, File)>,
    format: OutputFormat,
    width: usize,
}

impl Output {
    fn print(&mut self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        // A closed stdout (a pipe whose reader left) is not worth failing a statement over.
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
        self.spool_write(text);
    }

    fn error(&mut self, text: &str) {
        let mut stderr = std::io::stderr().lock();
        let _ = stderr.write_all(text.as_bytes());
        let _ = stderr.flush();
        self.spool_write(text);
    }

    fn spool_write(&mut self, text: &str) {
        if let Some((path, file)) = &mut self.spool
            && let Err(e) = file.write_all(text.as_bytes())
        {
            let message = format!("Stopped spooling to {}: {e}\n", path.display());
            self.spool = None;
            let _ = std::io::stderr().write_all(message.as_bytes());
        }
    }
}

/// A session with one server.
pub struct Shell {
    client: Client,
    context: RequestContext,
    output: Output,
    runtime: tokio::runtime::Runtime,
    names: Names,
}

impl Shell {
    /// A session with the server at `client`, running its requests on its own runtime.
    pub fn new(client: Client) -> std::io::Result<Shell> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Shell {
            client,
            context: RequestContext::default(),
            output: Output {
                spool: None,
                format: OutputFormat::Tabular,
                width: 120,
            },
            runtime,
            names: Names::default(),
        })
    }

    /// The names the completer offers; refreshed after statements that change the catalog.
    pub fn names(&self) -> Names {
        self.names.clone()
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        self.client.url()
    }

    /// Sets the width tables are fitted to (the terminal's).
    pub fn set_width(&mut self, width: usize) {
        // A terminal that reports no size (some pseudo-terminals) keeps the default.
        if width >= 20 {
            self.output.width = width;
        }
    }

    /// Sets how results print.
    pub fn set_output(&mut self, format: OutputFormat) {
        self.output.format = format;
    }

    /// Defines a variable, as `DEFINE name = 'value';` does.
    pub fn define(&mut self, name: &str, value: &str) {
        self.context
            .variables
            .insert(name.to_string(), value.to_string());
    }

    /// The server's version, or why it cannot be reached.
    pub fn server_version(&self) -> Result<String, ClientError> {
        self.runtime
            .block_on(self.client.info())
            .map(|info| info.version)
    }

    /// Prints `text` to the output (and the spool).
    pub fn print(&mut self, text: &str) {
        self.output.print(text);
    }

    /// Runs everything in `text`: commands, and statements up to the first that fails. A last
    /// statement without its `;` runs too.
    pub fn execute(&mut self, text: &str) -> Result<Flow, Failed> {
        if let Some(flow) = self.command(text) {
            return flow;
        }
        let split = split(text);
        if split.open {
            self.output
                .error("The input ends inside a quote or a comment; nothing was run.\n");
            return Err(Failed);
        }
        let mut statements = split.statements;
        if !split.rest.is_empty() {
            statements.push(format!("{};", split.rest));
        }
        for statement in statements {
            if let Some(flow) = self.command(&statement) {
                if flow? == Flow::Exit {
                    return Ok(Flow::Exit);
                }
                continue;
            }
            self.statement(&statement)?;
        }
        Ok(Flow::Continue)
    }

    /// Runs `text` if it is a built-in command.
    fn command(&mut self, text: &str) -> Option<Result<Flow, Failed>> {
        let line = text.trim().trim_end_matches(';').trim();
        let (word, argument) = match line.split_once(char::is_whitespace) {
            Some((word, argument)) => (word, argument.trim()),
            None => (line, ""),
        };
        let word = word.to_ascii_lowercase();
        Some(match word.as_str() {
            "help" if argument.is_empty() => {
                self.print(HELP);
                Ok(Flow::Continue)
            }
            "exit" | "quit" if argument.is_empty() => Ok(Flow::Exit),
            "clear" if argument.is_empty() => {
                self.output.print("\x1b[2J\x1b[H");
                Ok(Flow::Continue)
            }
            "version" if argument.is_empty() => {
                let server = self
                    .server_version()
                    .unwrap_or_else(|e| format!("unknown ({e})"));
                self.print(&format!(
                    "CLI v{}, Server v{server} located at {}\n",
                    env!("CARGO_PKG_VERSION"),
                    self.client.url()
                ));
                Ok(Flow::Continue)
            }
            "server" => self.server(argument),
            "output" => self.output_command(argument),
            "spool" => self.spool(argument),
            "run" => {
                let tokens = tokens(argument);
                match tokens.as_slice() {
                    [first, Token::Text(path)] if first.is("SCRIPT") => self.run_script(path),
                    [first, ..] if first.is("SCRIPT") => {
                        self.output
                            .error("Usage: RUN SCRIPT '<path to a file of statements>';\n");
                        Err(Failed)
                    }
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    fn server(&mut self, url: &str) -> Result<Flow, Failed> {
        if url.is_empty() {
            self.print(&format!("{}\n", self.client.url()));
            return Ok(Flow::Continue);
        }
        let client = self.client.for_server(url).map_err(|e| {
            self.output.error(&format!("{e}\n"));
            Failed
        })?;
        let previous = std::mem::replace(&mut self.client, client);
        match self.server_version() {
            Ok(version) => {
                self.print(&format!(
                    "Server now: {} (version {version})\n",
                    self.client.url()
                ));
                self.refresh_names();
                Ok(Flow::Continue)
            }
            Err(e) => {
                self.output.error(&format!(
                    "{e}\nStill using the server at {}.\n",
                    previous.url()
                ));
                self.client = previous;
                Err(Failed)
            }
        }
    }

    fn output_command(&mut self, format: &str) -> Result<Flow, Failed> {
        if format.is_empty() {
            let name = self.output.format.name();
            self.print(&format!("Output format: {name}\n"));
            return Ok(Flow::Continue);
        }
        match OutputFormat::parse(format) {
            Some(format) => {
                self.output.format = format;
                Ok(Flow::Continue)
            }
            None => {
                self.output.error(&format!(
                    "Unknown output format '{format}'; use TABULAR or JSON.\n"
                ));
                Err(Failed)
            }
        }
    }

    fn spool(&mut self, argument: &str) -> Result<Flow, Failed> {
        let argument = argument.trim_matches('\'');
        if argument.is_empty() {
            let text = match &self.output.spool {
                Some((path, _)) => format!("Spooling to {}\n", path.display()),
                None => "Not spooling; use SPOOL <file> to start and SPOOL OFF to stop.\n".into(),
            };
            self.print(&text);
            return Ok(Flow::Continue);
        }
        if argument.eq_ignore_ascii_case("off") {
            if let Some((path, _)) = self.output.spool.take() {
                self.print(&format!("Stopped spooling to {}\n", path.display()));
            }
            return Ok(Flow::Continue);
        }
        let path = PathBuf::from(argument);
        match File::options().create(true).append(true).open(&path) {
            Ok(file) => {
                self.output.spool = Some((path.clone(), file));
                self.print(&format!("Spooling to {}\n", path.display()));
                Ok(Flow::Continue)
            }
            Err(e) => {
                self.output
                    .error(&format!("Cannot spool to {}: {e}\n", path.display()));
                Err(Failed)
            }
        }
    }

    /// Runs a file of statements; stops at the first that fails.
    pub fn run_script(&mut self, path: &str) -> Result<Flow, Failed> {
        match std::fs::read_to_string(Path::new(path)) {
            Ok(text) => self.execute(&text),
            Err(e) => {
                self.output
                    .error(&format!("Cannot read the script {path}: {e}\n"));
                Err(Failed)
            }
        }
    }

    fn statement(&mut self, sql: &str) -> Result<(), Failed> {
        let tokens = tokens(sql);
        match tokens.as_slice() {
            [
                set,
                Token::Text(name),
                Token::Symbol('='),
                Token::Text(value),
                Token::Symbol(';'),
            ] if set.is("SET") => {
                let previous = self.context.properties.insert(name.clone(), value.clone());
                let message = match previous {
                    Some(previous) => format!(
                        "Successfully changed local property '{name}' from '{previous}' to '{value}'.\n"
                    ),
                    None => format!("Successfully changed local property '{name}' to '{value}'.\n"),
                };
                self.print(&message);
                Ok(())
            }
            [unset, Token::Text(name), Token::Symbol(';')] if unset.is("UNSET") => {
                let message = match self.context.properties.remove(name) {
                    Some(previous) => format!(
                        "Successfully unset local property '{name}' (value was '{previous}').\n"
                    ),
                    None => format!("Property '{name}' was not set.\n"),
                };
                self.print(&message);
                Ok(())
            }
            [
                define,
                name,
                Token::Symbol('='),
                Token::Text(value),
                Token::Symbol(';'),
            ] if define.is("DEFINE") => {
                let (Token::Word(name) | Token::Quoted(name)) = name else {
                    return self.ksql(sql);
                };
                self.define(name, value);
                Ok(())
            }
            [
                undefine,
                Token::Word(name) | Token::Quoted(name),
                Token::Symbol(';'),
            ] if undefine.is("UNDEFINE") => {
                let before = self.context.variables.len();
                self.context
                    .variables
                    .retain(|k, _| !k.eq_ignore_ascii_case(name));
                if self.context.variables.len() == before {
                    self.print(&format!("Variable '{name}' was not defined.\n"));
                }
                Ok(())
            }
            [first, ..] if first.is("PRINT") => self.print_topic(sql),
            [first, ..] if first.is("SELECT") => self.query(sql),
            _ => self.ksql(sql),
        }
    }

    fn ksql(&mut self, sql: &str) -> Result<(), Failed> {
        let answer = self.runtime.block_on(self.client.ksql(sql, &self.context));
        match answer {
            Ok(entities) => {
                if !entities.is_empty() {
                    let mut text =
                        render::entities(&entities, self.output.format, self.output.width);
                    text.push('\n');
                    self.print(&text);
                }
                let changes_catalog = tokens(sql)
                    .first()
                    .is_some_and(|t| t.is("CREATE") || t.is("DROP"));
                if changes_catalog {
                    self.refresh_names();
                }
                Ok(())
            }
            Err(error) => {
                self.report(sql, &error);
                Err(Failed)
            }
        }
    }

    /// Prints an error; for a SQL error with a position, the line it is on and a caret under it.
    fn report(&mut self, sql: &str, error: &ClientError) {
        let mut text = format!("{error}\n");
        if let ClientError::Server {
            message, entities, ..
        } = error
        {
            if let Some((line, column)) = error_position(message)
                && let Some(source) = sql.lines().nth(line.saturating_sub(1))
            {
                let pad: String = source
                    .chars()
                    .take(column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                text.push_str(&format!("{source}\n{pad}^\n"));
            }
            if !entities.is_empty() {
                let done = render::entities(entities, self.output.format, self.output.width);
                self.print(&done);
            }
        }
        if matches!(error, ClientError::Unreachable { .. }) {
            text.push_str(
                "Is the server running? The shell keeps trying on each statement; `server <url>` switches servers.\n",
            );
        }
        self.output.error(&text);
    }

    /// Prints a topic's lines as they come, until its `LIMIT` or Ctrl-C.
    fn print_topic(&mut self, sql: &str) -> Result<(), Failed> {
        let Shell {
            client,
            context,
            output,
            runtime,
            ..
        } = self;
        let result = runtime.block_on(async {
            let interrupted = tokio::signal::ctrl_c();
            tokio::pin!(interrupted);
            let mut stream = client.print(sql, context).await?;
            output.print("Press CTRL-C to interrupt\n");
            loop {
                tokio::select! {
                    line = stream.next_text_line() => match line? {
                        Some(line) => output.print(&format!("{line}\n")),
                        None => break,
                    },
                    // Dropping the stream closes the connection, which stops the print.
                    _ = &mut interrupted => break,
                }
            }
            Ok::<_, ClientError>(())
        });
        result.map_err(|e| {
            self.report(sql, &e);
            Failed
        })
    }

    fn query(&mut self, sql: &str) -> Result<(), Failed> {
        let Shell {
            client,
            context,
            output,
            runtime,
            ..
        } = self;
        let result = runtime.block_on(async {
            // Registered before the query starts, so an early Ctrl-C is not missed. Once it is
            // registered, Ctrl-C no longer ends the process; the prompt reads keys raw anyway.
            let interrupted = tokio::signal::ctrl_c();
            tokio::pin!(interrupted);
            let mut stream = client.query(sql, context).await?;
            let headers: Vec<String> = stream.columns.iter().map(|(n, _)| n.clone()).collect();
            let push = stream.query_id.is_some();
            let mut rows: Vec<Vec<String>> = Vec::new();
            let mut count = 0usize;
            let layout = Layout::streaming(&headers, 16, output.width);
            if push {
                output.print("Press CTRL-C to interrupt\n");
                if output.format == OutputFormat::Tabular {
                    output.print(&layout.header(&headers));
                }
            }
            let mut failure = None;
            loop {
                tokio::select! {
                    item = stream.next() => match item? {
                        Some(QueryItem::Row(values)) => {
                            count += 1;
                            match output.format {
                                OutputFormat::Json => output.print(&format!("{}\n", row_json(&headers, &values))),
                                OutputFormat::Tabular => {
                                    let cells: Vec<String> = values.iter().map(cell).collect();
                                    if push {
                                        output.print(&layout.row(&cells));
                                    } else {
                                        rows.push(cells);
                                    }
                                }
                            }
                        }
                        Some(QueryItem::Error(message)) => {
                            failure = Some(message);
                            break;
                        }
                        None => break,
                    },
                    _ = &mut interrupted => {
                        if let Some(id) = &stream.query_id {
                            // The connection closing would stop it too; closing says so at once.
                            let _ = client.close_query(id).await;
                        }
                        break;
                    }
                }
            }
            if output.format == OutputFormat::Tabular {
                if push {
                    output.print(&layout.border());
                } else {
                    output.print(&table::render(&headers, &rows, output.width));
                }
            }
            if failure.is_none() {
                let noun = if count == 1 { "row" } else { "rows" };
                output.print(&format!("{count} {noun}. Query terminated\n"));
            }
            // The answer was read; a query that failed on the server says why here.
            Ok::<_, ClientError>(failure)
        });
        match result {
            Ok(None) => Ok(()),
            Ok(Some(message)) => {
                self.output.error(&format!("The query failed: {message}\n"));
                Err(Failed)
            }
            Err(error) => {
                self.report(sql, &error);
                Err(Failed)
            }
        }
    }

    /// Fetches the names of streams, tables, their columns and the functions, for completion.
    pub fn refresh_names(&mut self) {
        let client = &self.client;
        let context = &self.context;
        let names = self.runtime.block_on(async {
            let mut names = Vec::new();
            let Ok(lists) = client
                .ksql("SHOW STREAMS; SHOW TABLES; SHOW FUNCTIONS;", context)
                .await
            else {
                return names;
            };
            let mut sources = Vec::new();
            for list in &lists {
                for key in ["streams", "tables"] {
                    for source in list[key].as_array().into_iter().flatten() {
                        if let Some(name) = source["name"].as_str() {
                            sources.push(name.to_string());
                        }
                    }
                }
                for function in list["functions"].as_array().into_iter().flatten() {
                    if let Some(name) = function["name"].as_str() {
                        names.push(name.to_string());
                    }
                }
            }
            for source in &sources {
                if let Ok(described) = client.ksql(&format!("DESCRIBE `{source}`;"), context).await
                {
                    for field in described
                        .iter()
                        .flat_map(|d| d["sourceDescription"]["fields"].as_array())
                        .flatten()
                    {
                        if let Some(name) = field["name"].as_str() {
                            names.push(name.to_string());
                        }
                    }
                }
            }
            names.extend(sources);
            names.sort();
            names.dedup();
            names
        });
        *self.names.write() = names;
    }
}

fn row_json(headers: &[String], values: &[Value]) -> Value {
    Value::Object(
        headers
            .iter()
            .cloned()
            .zip(values.iter().cloned())
            .collect(),
    )
}

/// What `help` prints.
const HELP: &str = "\
Statements end with ';' and may span several lines. ksqlDB's statements work, for example:
  CREATE STREAM s (id INT KEY, name STRING) WITH (kafka_topic='s', value_format='JSON', partitions=1);
  INSERT INTO s (id, name) VALUES (1, 'a');
  SELECT * FROM s EMIT CHANGES;          -- a push query: rows as they arrive, Ctrl-C stops it
  CREATE TABLE t AS SELECT id, COUNT(*) AS n FROM s GROUP BY id;
  SELECT * FROM t WHERE id = 1;          -- a pull query: the rows there now
  SHOW STREAMS; SHOW TABLES; SHOW QUERIES; DESCRIBE s; EXPLAIN <query id>;

Session settings, held by this shell and sent with each request:
  SET 'auto.offset.reset' = 'earliest';   UNSET 'auto.offset.reset';
  DEFINE name = 'value';  (then ${name} in statements)   UNDEFINE name;

Commands (no ';' needed):
  help                      this text
  exit, quit, Ctrl-D        leave the shell
  clear                     clear the screen
  history                   the statements typed before (Ctrl-R searches them)
  server [url]              show the server, or switch to another
  output [TABULAR|JSON]     show or set how results print
  spool <file> | spool off  copy the session's output to a file
  version                   the shell's and the server's versions
  run script '<file>'       run the statements in a file
";
