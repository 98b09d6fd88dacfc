//! Expressions.

use crate::ast::{Ident, SqlType};
use crate::span::Span;

/// An expression and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    /// What the expression is.
    pub kind: ExprKind,
    /// Its source range.
    pub span: Span,
}

impl Expr {
    /// An expression with a span.
    pub fn new(kind: ExprKind, span: Span) -> Self {
        Expr { kind, span }
    }

    /// The expressions directly inside this one, in the order they were written.
    pub fn children(&self) -> Vec<&Expr> {
        match &self.kind {
            ExprKind::Literal(_) | ExprKind::Column { .. } => Vec::new(),
            ExprKind::Dereference { base: expr, .. }
            | ExprKind::Unary { expr, .. }
            | ExprKind::IsNull { expr, .. }
            | ExprKind::Cast { expr, .. }
            | ExprKind::Lambda { body: expr, .. }
            | ExprKind::AtTimeZone { expr, .. } => vec![expr],
            ExprKind::Subscript {
                base: left,
                index: right,
            }
            | ExprKind::Binary { left, right, .. }
            | ExprKind::IsDistinctFrom { left, right, .. }
            | ExprKind::Like {
                expr: left,
                pattern: right,
                ..
            } => vec![left, right],
            ExprKind::Between {
                expr, low, high, ..
            } => vec![expr, low, high],
            ExprKind::InList { expr, list, .. } => std::iter::once(&**expr).chain(list).collect(),
            ExprKind::Case {
                operand,
                branches,
                otherwise,
            } => operand
                .iter()
                .map(|e| &**e)
                .chain(branches.iter().flat_map(|(when, then)| [when, then]))
                .chain(otherwise.iter().map(|e| &**e))
                .collect(),
            ExprKind::Array(items) | ExprKind::Function { args: items, .. } => {
                items.iter().collect()
            }
            ExprKind::Map(entries) => entries.iter().flat_map(|(k, v)| [k, v]).collect(),
            ExprKind::Struct(fields) => fields.iter().map(|(_, v)| v).collect(),
        }
    }

    /// How many expressions deep the tree is (a literal is 1), found without recursion so
    /// that a tree too deep to walk recursively can be measured and refused.
    pub fn height(&self) -> usize {
        let mut deepest = 0;
        let mut pending = vec![(self, 1)];
        while let Some((expr, depth)) = pending.pop() {
            deepest = deepest.max(depth);
            pending.extend(expr.children().into_iter().map(|child| (child, depth + 1)));
        }
        deepest
    }
}

/// The kinds of expression ksqlDB accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExprKind {
    /// A literal value.
    Literal(Literal),
    /// A column, optionally qualified by a source name or alias: `COL`, `S.COL`.
    Column {
        /// The qualifier, if any.
        source: Option<Ident>,
        /// The column name.
        name: Ident,
    },
    /// Struct field access: `base->field`.
    Dereference {
        /// The struct.
        base: Box<Expr>,
        /// The field.
        field: Ident,
    },
    /// Array or map subscript: `base[index]`.
    Subscript {
        /// The array or map.
        base: Box<Expr>,
        /// The index or key.
        index: Box<Expr>,
    },
    /// A prefix operator: `-x`, `+x`, `NOT x`.
    Unary {
        /// The operator.
        op: UnaryOp,
        /// The operand.
        expr: Box<Expr>,
    },
    /// An infix operator.
    Binary {
        /// Left operand.
        left: Box<Expr>,
        /// The operator.
        op: BinaryOp,
        /// Right operand.
        right: Box<Expr>,
    },
    /// `expr [NOT] BETWEEN low AND high`.
    Between {
        /// The tested value.
        expr: Box<Expr>,
        /// `NOT BETWEEN`.
        negated: bool,
        /// Lower bound.
        low: Box<Expr>,
        /// Upper bound.
        high: Box<Expr>,
    },
    /// `expr [NOT] IN (a, b, ...)`.
    InList {
        /// The tested value.
        expr: Box<Expr>,
        /// `NOT IN`.
        negated: bool,
        /// The candidates.
        list: Vec<Expr>,
    },
    /// `expr [NOT] LIKE pattern [ESCAPE 'c']`.
    Like {
        /// The tested value.
        expr: Box<Expr>,
        /// `NOT LIKE`.
        negated: bool,
        /// The pattern.
        pattern: Box<Expr>,
        /// The escape character, if given.
        escape: Option<String>,
    },
    /// `expr IS [NOT] NULL`.
    IsNull {
        /// The tested value.
        expr: Box<Expr>,
        /// `IS NOT NULL`.
        negated: bool,
    },
    /// `left IS [NOT] DISTINCT FROM right`.
    IsDistinctFrom {
        /// Left operand.
        left: Box<Expr>,
        /// `IS NOT DISTINCT FROM`.
        negated: bool,
        /// Right operand.
        right: Box<Expr>,
    },
    /// `CASE [operand] WHEN .. THEN .. [ELSE ..] END`.
    Case {
        /// The operand of a simple `CASE`; none for a searched `CASE`.
        operand: Option<Box<Expr>>,
        /// `WHEN condition THEN result` pairs.
        branches: Vec<(Expr, Expr)>,
        /// The `ELSE` result.
        otherwise: Option<Box<Expr>>,
    },
    /// `CAST(expr AS type)`.
    Cast {
        /// The value.
        expr: Box<Expr>,
        /// The target type.
        ty: SqlType,
    },
    /// `ARRAY[a, b, ...]`.
    Array(Vec<Expr>),
    /// `MAP(k := v, ...)`.
    Map(Vec<(Expr, Expr)>),
    /// `STRUCT(name := v, ...)`.
    Struct(Vec<(Ident, Expr)>),
    /// A function call; `COUNT(*)` has `star` set and no arguments.
    Function {
        /// The function name.
        name: Ident,
        /// Arguments, lambdas among them.
        args: Vec<Expr>,
        /// Whether the call was `f(*)`.
        star: bool,
    },
    /// A lambda argument: `x => body` or `(x, y) => body`.
    Lambda {
        /// Parameter names.
        params: Vec<Ident>,
        /// The body.
        body: Box<Expr>,
    },
    /// `expr AT TIME ZONE 'zone'`.
    AtTimeZone {
        /// The timestamp.
        expr: Box<Expr>,
        /// The zone id.
        zone: String,
    },
}

/// Prefix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    /// `-`
    Minus,
    /// `+`
    Plus,
    /// `NOT`
    Not,
}

/// Infix operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    /// `OR`
    Or,
    /// `AND`
    And,
    /// `=`
    Eq,
    /// `<>` or `!=`
    NotEq,
    /// `<`
    Lt,
    /// `<=`
    LtEq,
    /// `>`
    Gt,
    /// `>=`
    GtEq,
    /// `||`
    Concat,
    /// `+`
    Plus,
    /// `-`
    Minus,
    /// `*`
    Multiply,
    /// `/`
    Divide,
    /// `%`
    Modulo,
}

impl BinaryOp {
    /// Whether it compares its operands (`=`, `<>`, `<`, `<=`, `>`, `>=`).
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq
                | BinaryOp::NotEq
                | BinaryOp::Lt
                | BinaryOp::LtEq
                | BinaryOp::Gt
                | BinaryOp::GtEq
        )
    }

    /// Whether it is arithmetic (`+`, `-`, `*`, `/`, `%`).
    pub fn is_arithmetic(self) -> bool {
        matches!(
            self,
            BinaryOp::Plus
                | BinaryOp::Minus
                | BinaryOp::Multiply
                | BinaryOp::Divide
                | BinaryOp::Modulo
        )
    }

    /// The comparison with its operands swapped: `1 < k` is `k > 1`.
    pub fn flipped(self) -> BinaryOp {
        match self {
            BinaryOp::Lt => BinaryOp::Gt,
            BinaryOp::LtEq => BinaryOp::GtEq,
            BinaryOp::Gt => BinaryOp::Lt,
            BinaryOp::GtEq => BinaryOp::LtEq,
            other => other,
        }
    }

    /// The operator as written.
    pub fn symbol(self) -> &'static str {
        match self {
            BinaryOp::Or => "OR",
            BinaryOp::And => "AND",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::Concat => "||",
            BinaryOp::Plus => "+",
            BinaryOp::Minus => "-",
            BinaryOp::Multiply => "*",
            BinaryOp::Divide => "/",
            BinaryOp::Modulo => "%",
        }
    }

    /// Binding strength: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinaryOp::Or => 1,
            BinaryOp::And => 2,
            BinaryOp::Eq
            | BinaryOp::NotEq
            | BinaryOp::Lt
            | BinaryOp::LtEq
            | BinaryOp::Gt
            | BinaryOp::GtEq => 4,
            BinaryOp::Concat => 5,
            BinaryOp::Plus | BinaryOp::Minus => 6,
            BinaryOp::Multiply | BinaryOp::Divide | BinaryOp::Modulo => 7,
        }
    }
}

/// Literal values, in ksqlDB's forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    /// `NULL`.
    Null,
    /// `TRUE` / `FALSE`.
    Boolean(bool),
    /// A whole number: an `INT` when it fits 32 bits, else a `BIGINT`.
    Integer(i64),
    /// A number with a point and no exponent, such as `1.50`: a `DECIMAL` in ksqlDB. The text is
    /// kept so precision and scale are exact.
    Decimal(String),
    /// A number with an exponent, such as `1.5E3`: a `DOUBLE`. The text is kept as written.
    Double(String),
    /// A single-quoted string, unescaped.
    String(String),
    /// A hex bytes literal `X'..'`, as its hex digits.
    Bytes(String),
}
