//! The parser, driven by the case files in `tests/cases/`, plus positions and robustness.

use eddy_sql::ast::{ExprKind, Literal, SelectItem, StatementKind};
use eddy_sql::{ParseOptions, parse_statement, parse_statements, parse_statements_with};
use proptest::prelude::*;

/// Reads `input => expected` cases separated by blank lines; `--` lines are comments.
fn cases(file: &str) -> Vec<(String, String)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/cases")
        .join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let lines: Vec<&str> = block.lines().filter(|l| !l.starts_with("--")).collect();
        if lines.is_empty() {
            continue;
        }
        let arrow = lines
            .iter()
            .position(|l| *l == "=>")
            .unwrap_or_else(|| panic!("no => in {block}"));
        out.push((lines[..arrow].join("\n"), lines[arrow + 1..].join("\n")));
    }
    out
}

#[test]
fn statements_parse_and_print_canonically() {
    let cases = cases("statements.sql");
    assert!(cases.len() > 30);
    for (input, expected) in cases {
        let statement = parse_statement(&input).unwrap_or_else(|e| panic!("{input}\n{e}"));
        let printed = statement.to_string();
        assert_eq!(printed, expected, "printing {input}");
        let again = parse_statement(&printed).unwrap_or_else(|e| panic!("{printed}\n{e}"));
        assert_eq!(again, statement, "round trip of {input}");
    }
}

#[test]
fn errors_say_where_and_what() {
    for (input, expected) in cases("errors.sql") {
        let err = parse_statements(&input).expect_err(&input);
        let (position, fragment) = expected.split_once(": ").unwrap();
        let (line, column) = position.split_once(':').unwrap();
        assert_eq!(
            (err.line().to_string(), err.column().to_string()),
            (line.to_string(), column.to_string()),
            "position of the error in {input}: {err}"
        );
        assert!(
            err.message.contains(fragment),
            "{input}\nexpected {fragment:?} in {err}"
        );
    }
}

#[test]
fn several_statements_keep_their_text_and_spans() {
    let sql = "SET 'a'='b';\n-- comment; not a statement\nSELECT ';' FROM s\n  EMIT CHANGES ;\n/* c */ SHOW TOPICS";
    let statements = parse_statements(sql).unwrap();
    assert_eq!(statements.len(), 3);
    assert_eq!(statements[1].text, "SELECT ';' FROM s\n  EMIT CHANGES");
    assert_eq!(statements[1].statement.span.start.line, 3);
    assert_eq!(statements[1].statement.span.end.line, 4);
    assert_eq!(statements[2].text, "SHOW TOPICS");
    assert_eq!(statements[2].statement.span.start.column, 9);
}

#[test]
fn identifiers_follow_ksqldb_case_rules() {
    let statement =
        parse_statement("SELECT abc, `aBc`, \"xY\", `we``ird col` FROM `my-stream`").unwrap();
    let StatementKind::Query(query) = statement.kind else {
        panic!("not a query");
    };
    let names: Vec<(String, bool)> = query
        .select
        .iter()
        .map(|item| match item {
            SelectItem::Expr { expr, .. } => match &expr.kind {
                ExprKind::Column { name, .. } => (name.value.clone(), name.quoted),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("ABC".to_string(), false),
            ("aBc".to_string(), true),
            ("xY".to_string(), true),
            ("we`ird col".to_string(), true)
        ]
    );
    assert_eq!(query.from.source.name.value, "my-stream");
}

#[test]
fn literals_have_ksqldb_types() {
    let StatementKind::Query(query) =
        parse_statement("SELECT 1, 3000000000, 1.50, 1.5e3, -7, 'x' FROM s")
            .unwrap()
            .kind
    else {
        panic!("not a query")
    };
    let literals: Vec<Literal> = query
        .select
        .iter()
        .map(|item| match item {
            SelectItem::Expr { expr, .. } => match &expr.kind {
                ExprKind::Literal(l) => l.clone(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        literals,
        vec![
            Literal::Integer(1),
            Literal::Integer(3_000_000_000),
            Literal::Decimal("1.50".into()),
            Literal::Double("1.5e3".into()),
            Literal::Integer(-7),
            Literal::String("x".into()),
        ]
    );
}

#[test]
fn test_and_shell_statements_need_their_options() {
    assert!(parse_statements("RUN SCRIPT 'x.sql'").is_err());
    assert!(parse_statements("ASSERT STREAM s (a INT)").is_err());
    let all = ParseOptions::all();
    for sql in [
        "RUN SCRIPT 'x.sql'",
        "ASSERT VALUES s (a, b) VALUES (1, 'x')",
        "ASSERT NULL VALUES t (k) KEY (1)",
        "ASSERT STREAM s (a INT KEY) WITH (kafka_topic='s')",
        "ASSERT TABLE t (a INT PRIMARY KEY, b STRING)",
    ] {
        let parsed = parse_statements_with(sql, all).unwrap_or_else(|e| panic!("{sql}: {e}"));
        let printed = parsed[0].statement.to_string();
        let again = parse_statements_with(&printed, all).unwrap();
        assert_eq!(
            again[0].statement, parsed[0].statement,
            "{sql} printed as {printed}"
        );
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let reasonable = format!("SELECT {}1{} FROM s", "ABS(".repeat(25), ")".repeat(25));
    parse_statements(&reasonable).expect("25 nested calls parse");
    let sql = format!("SELECT {}1{} FROM s", "(".repeat(5000), ")".repeat(5000));
    let err = parse_statements(&sql).unwrap_err();
    assert!(err.message.contains("nests too deeply"), "{err}");
    let ty = format!(
        "CREATE STREAM s (a {}INT{}) WITH (kafka_topic='t')",
        "ARRAY<".repeat(3000),
        ">".repeat(3000)
    );
    assert!(parse_statements(&ty).is_err());
}

/// Operator chains are flat to parse but as deep as they are long to walk: a chain of 900
/// is fine, one of 300,000 (600 KB of `+1`) is refused at the operand that takes the tree
/// past 1,000 levels, quickly and without building the whole tree.
#[test]
fn long_operator_chains_are_refused_past_a_thousand() {
    let or_chain = |n: usize| {
        let terms: Vec<String> = (0..n).map(|i| format!("a = {i}")).collect();
        format!("SELECT * FROM s WHERE {};", terms.join(" OR "))
    };
    parse_statements(&or_chain(900)).expect("900 alternatives parse");
    let err = parse_statements(&or_chain(1001)).unwrap_err();
    assert!(err.message.contains("the expression is too deep"), "{err}");
    let plus = format!("SELECT 1{} FROM s;", "+1".repeat(300_000));
    let started = std::time::Instant::now();
    let err = parse_statements(&plus).unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert!(err.message.contains("more than 1000 levels deep"), "{err}");
    // The thousandth `+1` makes the tree 1,001 deep; its `1` is at column 10 + 2 × 999.
    assert_eq!((err.position.line, err.position.column), (1, 2008));
    for chain in [
        format!("SELECT a{} FROM s;", "[0]".repeat(5000)),
        format!("SELECT a{} FROM s;", "->b".repeat(5000)),
        format!("SELECT 'x'{} FROM s;", " || 'y'".repeat(5000)),
        format!("SELECT * FROM s WHERE {};", vec!["a"; 5000].join(" AND ")),
        // Nesting and chains together: 60 levels of 20-term sums are 1,200 deep.
        format!(
            "SELECT {}1{} FROM s;",
            "(1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+1+".repeat(60),
            ")".repeat(60)
        ),
    ] {
        let err = parse_statements(&chain).unwrap_err();
        assert!(err.message.contains("too deep"), "{err}");
    }
}

const SEEDS: &[&str] = &[
    "CREATE STREAM s (id INT KEY, v STRING) WITH (kafka_topic='t', value_format='JSON');",
    "CREATE TABLE t AS SELECT id, COUNT(*) FROM s WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY id EMIT CHANGES;",
    "SELECT a->b, m['k'], CASE WHEN x THEN 1 ELSE 2 END FROM s JOIN t WITHIN 1 HOUR ON s.id = t.id;",
    "INSERT INTO s (a, b) VALUES (1, 'x');",
    "SELECT TRANSFORM(arr, (x, y) => x + y) FROM s WHERE a NOT BETWEEN 1 AND 2 LIMIT 3;",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Random text never makes the parser panic.
    #[test]
    fn random_text_never_panics(text in "\\PC{0,120}") {
        let _ = parse_statements_with(&text, ParseOptions::all());
    }

    /// Statements with bytes cut, duplicated or swapped never make the parser panic, and whatever
    /// parses prints to SQL that parses to the same AST.
    #[test]
    fn mutated_statements_never_panic(seed in 0..SEEDS.len(), at in 0usize..200, len in 0usize..12, mode in 0u8..3) {
        let base = SEEDS[seed];
        let mut chars: Vec<char> = base.chars().collect();
        let at = at % chars.len();
        let end = (at + len).min(chars.len());
        match mode {
            0 => { chars.drain(at..end); }
            1 => { let piece: Vec<char> = chars[at..end].to_vec(); chars.splice(at..at, piece); }
            _ => { chars[at..end].reverse(); }
        }
        let text: String = chars.into_iter().collect();
        if let Ok(parsed) = parse_statements_with(&text, ParseOptions::all()) {
            for p in parsed {
                let printed = p.statement.to_string();
                let again = parse_statements_with(&printed, ParseOptions::all());
                prop_assert!(again.is_ok(), "{} printed as {} fails: {:?}", text, printed, again);
                prop_assert_eq!(&again.unwrap()[0].statement, &p.statement);
            }
        }
    }
}

/// An expression of `terms`, each maybe opening or closing parentheses, joined by operators.
fn chain_text(terms: &[(bool, bool, usize)]) -> String {
    // Comparisons do not chain in ksqlDB's grammar (`a = b = c` is a syntax error).
    const OPERATORS: &[&str] = &["+", "-", "*", "/", "AND", "OR", "||"];
    let mut text = String::from("SELECT ");
    let mut open = 0usize;
    for (i, (opens, closes, op)) in terms.iter().enumerate() {
        if *opens {
            text.push('(');
            open += 1;
        }
        text.push_str(&format!("x{i}"));
        if *closes && open > 0 {
            text.push(')');
            open -= 1;
        }
        if i + 1 < terms.len() {
            text.push_str(&format!(" {} ", OPERATORS[op % OPERATORS.len()]));
        }
    }
    text.push_str(&")".repeat(open));
    text.push_str(" FROM s;");
    text
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Chains and nestings of any length and shape, up to thousands of terms, are parsed or
    /// refused as too deep, never overflow the stack; what parses prints back to the same tree.
    #[test]
    fn chains_and_nestings_of_any_size_parse_or_are_refused(
        terms in proptest::collection::vec((any::<bool>(), any::<bool>(), 0usize..7), 1..4000)
    ) {
        let text = chain_text(&terms);
        match parse_statements(&text) {
            Ok(parsed) => {
                let printed = parsed[0].statement.to_string();
                let again = parse_statements(&printed).expect("printed SQL parses");
                prop_assert_eq!(&again[0].statement, &parsed[0].statement);
            }
            Err(e) => prop_assert!(e.message.contains("too deep"), "{}", e),
        }
    }
}
