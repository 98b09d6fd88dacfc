//! Rewriting expressions: replace sub-expressions bottom-up or top-down, keeping spans.

use super::expr::{Expr, ExprKind};

impl Expr {
    /// A copy of the expression in which every sub-expression for which `replace` returns
    /// `Some` is replaced (without looking inside it); the others are rebuilt from their
    /// rewritten children. `replace` sees the outermost expressions first.
    pub fn rewrite(&self, replace: &mut dyn FnMut(&Expr) -> Option<Expr>) -> Expr {
        if let Some(replaced) = replace(self) {
            return replaced;
        }
        let mut go = |e: &Expr| Box::new(e.rewrite(replace));
        let kind = match &self.kind {
            ExprKind::Literal(_) | ExprKind::Column { .. } => self.kind.clone(),
            ExprKind::Dereference { base, field } => ExprKind::Dereference {
                base: go(base),
                field: field.clone(),
            },
            ExprKind::Subscript { base, index } => ExprKind::Subscript {
                base: go(base),
                index: go(index),
            },
            ExprKind::Unary { op, expr } => ExprKind::Unary {
                op: *op,
                expr: go(expr),
            },
            ExprKind::Binary { left, op, right } => ExprKind::Binary {
                left: go(left),
                op: *op,
                right: go(right),
            },
            ExprKind::Between {
                expr,
                negated,
                low,
                high,
            } => ExprKind::Between {
                expr: go(expr),
                negated: *negated,
                low: go(low),
                high: go(high),
            },
            ExprKind::InList {
                expr,
                negated,
                list,
            } => ExprKind::InList {
                expr: go(expr),
                negated: *negated,
                list: list.iter().map(|e| *go(e)).collect(),
            },
            ExprKind::Like {
                expr,
                negated,
                pattern,
                escape,
            } => ExprKind::Like {
                expr: go(expr),
                negated: *negated,
                pattern: go(pattern),
                escape: escape.clone(),
            },
            ExprKind::IsNull { expr, negated } => ExprKind::IsNull {
                expr: go(expr),
                negated: *negated,
            },
            ExprKind::IsDistinctFrom {
                left,
                negated,
                right,
            } => ExprKind::IsDistinctFrom {
                left: go(left),
                negated: *negated,
                right: go(right),
            },
            ExprKind::Case {
                operand,
                branches,
                otherwise,
            } => ExprKind::Case {
                operand: operand.as_deref().map(&mut go),
                branches: branches.iter().map(|(w, t)| (*go(w), *go(t))).collect(),
                otherwise: otherwise.as_deref().map(&mut go),
            },
            ExprKind::Cast { expr, ty } => ExprKind::Cast {
                expr: go(expr),
                ty: ty.clone(),
            },
            ExprKind::Array(items) => ExprKind::Array(items.iter().map(|e| *go(e)).collect()),
            ExprKind::Map(entries) => {
                ExprKind::Map(entries.iter().map(|(k, v)| (*go(k), *go(v))).collect())
            }
            ExprKind::Struct(fields) => {
                ExprKind::Struct(fields.iter().map(|(n, v)| (n.clone(), *go(v))).collect())
            }
            ExprKind::Function { name, args, star } => ExprKind::Function {
                name: name.clone(),
                args: args.iter().map(|e| *go(e)).collect(),
                star: *star,
            },
            ExprKind::Lambda { params, body } => ExprKind::Lambda {
                params: params.clone(),
                body: go(body),
            },
            ExprKind::AtTimeZone { expr, zone } => ExprKind::AtTimeZone {
                expr: go(expr),
                zone: zone.clone(),
            },
        };
        Expr {
            kind,
            span: self.span,
        }
    }

    /// Whether any sub-expression (this one included) satisfies `test`.
    pub fn any(&self, test: &mut dyn FnMut(&Expr) -> bool) -> bool {
        let mut found = false;
        self.rewrite(&mut |e| {
            if !found && test(e) {
                found = true;
            }
            None
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use crate::ast::ExprKind;

    #[test]
    fn rewriting_replaces_outermost_matches_and_keeps_the_rest() {
        let expr = crate::parse_expression("SUM(a) + ABS(SUM(b)) * 2").unwrap();
        let mut seen = Vec::new();
        let rewritten = expr.rewrite(&mut |e| match &e.kind {
            ExprKind::Function { name, .. } if name.value == "SUM" => {
                seen.push(e.to_string());
                Some(crate::parse_expression(&format!("agg{}", seen.len() - 1)).unwrap())
            }
            _ => None,
        });
        assert_eq!(seen, ["SUM(A)", "SUM(B)"]);
        assert_eq!(rewritten.to_string(), "AGG0 + ABS(AGG1) * 2");
        assert!(expr.any(&mut |e| matches!(&e.kind, ExprKind::Literal(_))));
    }
}
