//! `${name}` substitution of variables set with `DEFINE`.

use std::collections::HashMap;

use crate::error::ParseError;
use crate::lexer::end_position;

/// The longest text substitution may make of a request: each `${name}` is a few bytes that
/// can stand for a long value, so without a bound a small request could expand to gigabytes.
/// It is the server's default limit on a request body.
pub const MAX_SUBSTITUTED_BYTES: usize = 10 * 1024 * 1024;

/// Replaces every `${name}` in `sql` with the variable's value; names match case-insensitively.
/// A reference to an undefined variable is an error that says where it is, and so is the
/// reference that takes the text past [`MAX_SUBSTITUTED_BYTES`] (or past its own length).
pub fn substitute_variables(
    sql: &str,
    variables: &HashMap<String, String>,
) -> Result<String, ParseError> {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            let at = end_position(&sql[..sql.len() - rest.len() + start]);
            return Err(ParseError::new(
                "Syntax Error\n'${' is not closed with '}'",
                at,
            ));
        };
        let name = &after[..end];
        let value = variables
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v);
        match value {
            Some(value) => {
                let limit = MAX_SUBSTITUTED_BYTES.max(sql.len());
                let remaining = after.len() - (end + 1);
                if out.len() + value.len() + remaining > limit {
                    let at = end_position(&sql[..sql.len() - rest.len() + start]);
                    return Err(ParseError::new(
                        format!(
                            "Syntax Error\nsubstituting the variable '{name}' here makes the statements longer than {limit} bytes"
                        ),
                        at,
                    ));
                }
                out.push_str(value)
            }
            None => {
                let at = end_position(&sql[..sql.len() - rest.len() + start]);
                return Err(ParseError::new(
                    format!(
                        "Syntax Error\nthe variable '{name}' is not defined; define it with DEFINE {name} = '...'"
                    ),
                    at,
                ));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_substituted_everywhere() {
        let vars = HashMap::from([("topic".to_string(), "orders".to_string())]);
        assert_eq!(
            substitute_variables("PRINT '${topic}'; SELECT * FROM ${TOPIC};", &vars).unwrap(),
            "PRINT 'orders'; SELECT * FROM orders;"
        );
    }

    #[test]
    fn substitution_cannot_blow_a_request_up() {
        let vars = HashMap::from([("v".to_string(), "x".repeat(1 << 20))]);
        let sql = "SELECT '${v}${v}${v}${v}${v}${v}${v}${v}${v}${v}${v}' FROM s;";
        let err = substitute_variables(sql, &vars).unwrap_err();
        assert!(err.message.contains("longer than 10485760 bytes"), "{err}");
        // Ten values and the text around them cross the line at the tenth reference.
        assert_eq!((err.position.line, err.position.column), (1, 45));
        let ten = "${v}".repeat(10);
        assert!(substitute_variables(&ten, &vars).is_ok());
    }

    #[test]
    fn undefined_variables_are_errors_with_positions() {
        let err = substitute_variables("SELECT\n  ${nope}", &HashMap::new()).unwrap_err();
        assert_eq!((err.position.line, err.position.column), (2, 3));
        assert!(err.message.contains("not defined"));
    }
}
