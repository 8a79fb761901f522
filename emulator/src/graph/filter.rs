//! The OData `$filter` subset that directory queries on users accept, Graph's rules on
//! which property/operator pairs need "advanced query" parameters, and evaluation.

use crate::props::{self, PROPS, Slot};
use crate::user::User;

#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(String),
    Bool(bool),
    Null,
    Num(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    StartsWith,
    EndsWith,
}

/// A condition on the lambda variable inside `coll/any(x: ...)`.
#[derive(Clone, Debug, PartialEq)]
pub enum ItemCond {
    Eq(String),
    Func(Func, String),
    Or(Box<ItemCond>, Box<ItemCond>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp {
        prop: usize,
        op: Op,
        lit: Lit,
    },
    In {
        prop: usize,
        lits: Vec<Lit>,
    },
    Func {
        func: Func,
        prop: usize,
        arg: String,
    },
    Any {
        prop: usize,
        cond: ItemCond,
    },
}

/// Why a filter was refused; each maps to one Graph error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterError {
    /// 400 BadRequest "Invalid filter clause: ..."
    Syntax(String),
    /// 400 BadRequest "Could not find a property named ..."
    UnknownProperty(String),
    /// 400 Request_UnsupportedQuery: operator needs ConsistencyLevel + $count.
    NeedsAdvanced(&'static str),
    /// 400 Request_UnsupportedQuery: the property can't be filtered this way.
    Unsupported(String),
    /// 400 BadRequest: operand types don't match.
    Incompatible(String),
}

impl FilterError {
    pub fn code(&self) -> &'static str {
        match self {
            FilterError::Syntax(_)
            | FilterError::UnknownProperty(_)
            | FilterError::Incompatible(_) => "BadRequest",
            FilterError::NeedsAdvanced(_) | FilterError::Unsupported(_) => {
                "Request_UnsupportedQuery"
            }
        }
    }

    pub fn message(&self) -> String {
        match self {
            FilterError::Syntax(m) => format!("Invalid filter clause: {m}"),
            FilterError::UnknownProperty(p) => {
                format!("Could not find a property named '{p}' on type 'microsoft.graph.user'.")
            }
            FilterError::NeedsAdvanced(op) => format!(
                "Operator '{op}' is not supported because the required parameters might be missing. Try adding $count=true query parameter and ConsistencyLevel:eventual header. Refer to https://aka.ms/graph-docs/advanced-queries for more information"
            ),
            FilterError::Unsupported(p) => format!(
                "Unsupported or invalid query filter clause specified for property '{p}' of resource 'User'."
            ),
            FilterError::Incompatible(m) => format!("Invalid filter clause: {m}"),
        }
    }
}

// ---------------------------------------------------------------- tokenizer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    LParen,
    RParen,
    Comma,
    Colon,
}

fn tokenize(src: &str) -> Result<Vec<(Tok, usize)>, FilterError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let pos = i + 1;
        match c {
            ' ' | '\t' | '\r' | '\n' => i += 1,
            '(' => {
                out.push((Tok::LParen, pos));
                i += 1;
            }
            ')' => {
                out.push((Tok::RParen, pos));
                i += 1;
            }
            ',' => {
                out.push((Tok::Comma, pos));
                i += 1;
            }
            ':' => {
                out.push((Tok::Colon, pos));
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(FilterError::Syntax(format!(
                                "There is an unterminated string literal at position {} in '{src}'.",
                                chars.len()
                            )));
                        }
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push((Tok::Str(s), pos));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let n = text.parse::<f64>().map_err(|_| syntax(pos, src))?;
                out.push((Tok::Num(n), pos));
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '/' | '.' | '$'))
                {
                    i += 1;
                }
                out.push((Tok::Ident(chars[start..i].iter().collect()), pos));
            }
            _ => return Err(syntax(pos, src)),
        }
    }
    Ok(out)
}

fn syntax(pos: usize, src: &str) -> FilterError {
    FilterError::Syntax(format!("Syntax error at position {pos} in '{src}'."))
}

// ---------------------------------------------------------------- parser

struct Parser<'a> {
    toks: Vec<(Tok, usize)>,
    i: usize,
    src: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.0)
    }
    fn pos(&self) -> usize {
        self.toks
            .get(self.i)
            .map(|t| t.1)
            .unwrap_or(self.src.chars().count())
    }
    fn err(&self) -> FilterError {
        syntax(self.pos(), self.src)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.0.clone());
        self.i += 1;
        t
    }
    fn expect(&mut self, t: Tok) -> Result<(), FilterError> {
        if self.peek() == Some(&t) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.err())
        }
    }
    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.i += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            self.i += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.keyword("not") {
            self.i += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.i += 1;
            let e = self.or()?;
            self.expect(Tok::RParen)?;
            return Ok(e);
        }
        self.primary()
    }

    fn literal(&mut self) -> Result<Lit, FilterError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Num(n)) => Ok(Lit::Num(n)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("true") => Ok(Lit::Bool(true)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("false") => Ok(Lit::Bool(false)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("null") => Ok(Lit::Null),
            _ => {
                self.i -= 1;
                Err(self.err())
            }
        }
    }

    fn string_arg(&mut self) -> Result<String, FilterError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(s),
            _ => {
                self.i -= 1;
                Err(self.err())
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        let Some(Tok::Ident(name)) = self.next() else {
            self.i = self.i.saturating_sub(1);
            return Err(self.err());
        };
        let lower = name.to_ascii_lowercase();
        if (lower == "startswith" || lower == "endswith") && self.peek() == Some(&Tok::LParen) {
            let func = if lower == "startswith" {
                Func::StartsWith
            } else {
                Func::EndsWith
            };
            self.i += 1;
            let Some(Tok::Ident(p)) = self.next() else {
                self.i -= 1;
                return Err(self.err());
            };
            let prop = prop_index(&p)?;
            self.expect(Tok::Comma)?;
            let arg = self.string_arg()?;
            self.expect(Tok::RParen)?;
            return Ok(Expr::Func { func, prop, arg });
        }
        if let Some((coll, lambda)) = name.split_once('/') {
            if !lambda.eq_ignore_ascii_case("any") {
                return Err(self.err());
            }
            let prop = prop_index(coll)?;
            self.expect(Tok::LParen)?;
            let Some(Tok::Ident(var)) = self.next() else {
                self.i -= 1;
                return Err(self.err());
            };
            self.expect(Tok::Colon)?;
            let cond = self.item_or(&var)?;
            self.expect(Tok::RParen)?;
            return Ok(Expr::Any { prop, cond });
        }
        if self.peek() == Some(&Tok::LParen) {
            // Any other function (contains, substringof, length, ...).
            return Err(FilterError::Unsupported(name));
        }
        let prop = prop_index(&name)?;
        let Some(Tok::Ident(op)) = self.next() else {
            self.i = self.i.saturating_sub(1);
            return Err(self.err());
        };
        let op = match op.to_ascii_lowercase().as_str() {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "in" => {
                self.expect(Tok::LParen)?;
                let mut lits = vec![self.literal()?];
                while self.peek() == Some(&Tok::Comma) {
                    self.i += 1;
                    lits.push(self.literal()?);
                }
                self.expect(Tok::RParen)?;
                return Ok(Expr::In { prop, lits });
            }
            _ => {
                self.i -= 1;
                return Err(self.err());
            }
        };
        let lit = self.literal()?;
        Ok(Expr::Cmp { prop, op, lit })
    }

    fn item_or(&mut self, var: &str) -> Result<ItemCond, FilterError> {
        let mut left = self.item(var)?;
        while self.keyword("or") {
            self.i += 1;
            let right = self.item(var)?;
            left = ItemCond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn item(&mut self, var: &str) -> Result<ItemCond, FilterError> {
        let Some(Tok::Ident(name)) = self.next() else {
            self.i = self.i.saturating_sub(1);
            return Err(self.err());
        };
        let lower = name.to_ascii_lowercase();
        if lower == "startswith" || lower == "endswith" {
            let func = if lower == "startswith" {
                Func::StartsWith
            } else {
                Func::EndsWith
            };
            self.expect(Tok::LParen)?;
            match self.next() {
                Some(Tok::Ident(v)) if v == var => {}
                _ => {
                    self.i -= 1;
                    return Err(self.err());
                }
            }
            self.expect(Tok::Comma)?;
            let arg = self.string_arg()?;
            self.expect(Tok::RParen)?;
            return Ok(ItemCond::Func(func, arg));
        }
        if name != var {
            return Err(self.err());
        }
        match self.next() {
            Some(Tok::Ident(op)) if op.eq_ignore_ascii_case("eq") => {
                Ok(ItemCond::Eq(self.string_arg()?))
            }
            _ => {
                self.i -= 1;
                Err(self.err())
            }
        }
    }
}

fn prop_index(name: &str) -> Result<usize, FilterError> {
    props::lookup(name).ok_or_else(|| FilterError::UnknownProperty(name.to_string()))
}

/// Parse a `$filter` value.
pub fn parse(src: &str) -> Result<Expr, FilterError> {
    let toks = tokenize(src)?;
    if toks.is_empty() {
        return Err(syntax(1, src));
    }
    let mut p = Parser { toks, i: 0, src };
    let e = p.or()?;
    if p.i < p.toks.len() {
        return Err(p.err());
    }
    Ok(e)
}

// ---------------------------------------------------------------- support rules

#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Default,
    Advanced,
    No,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Eq,
    EqNull,
    Ne,
    In,
    StartsWith,
    EndsWith,
    Range,
    AnyEq,
    AnyStartsWith,
    AnyEndsWith,
}

fn need(prop: &str, k: Kind) -> Need {
    use Kind::*;
    use Need::*;
    match (prop, k) {
        // Every `ne` (and `not`, checked separately) is an advanced query.
        (_, Ne) => match prop {
            "userPrincipalName"
            | "mail"
            | "accountEnabled"
            | "userType"
            | "displayName"
            | "givenName"
            | "surname"
            | "department"
            | "usageLocation"
            | "employeeId"
            | "onPremisesImmutableId"
            | "mobilePhone"
            | "preferredLanguage"
            | "jobTitle"
            | "companyName"
            | "officeLocation"
            | "mailNickname"
            | "id" => Advanced,
            _ => No,
        },
        ("id", Eq | In) => Default,
        ("userPrincipalName" | "mail", Eq | In | StartsWith) => Default,
        ("userPrincipalName" | "mail", EndsWith | EqNull | Range) => Advanced,
        ("accountEnabled", Eq | In) => Default,
        ("userType", Eq | In) => Default,
        ("userType", EqNull) => Advanced,
        (
            "displayName" | "givenName" | "surname" | "department" | "usageLocation"
            | "companyName" | "officeLocation" | "mailNickname",
            Eq | In | StartsWith,
        ) => Default,
        (
            "displayName" | "givenName" | "surname" | "department" | "usageLocation"
            | "companyName" | "officeLocation" | "mailNickname",
            EqNull | Range,
        ) => Advanced,
        ("employeeId", Eq | StartsWith) => Default,
        ("employeeId", In | EqNull | Range) => Advanced,
        ("onPremisesImmutableId", Eq | In | EqNull) => Advanced,
        ("mobilePhone" | "preferredLanguage", Eq | In | StartsWith | EqNull | Range) => Advanced,
        ("jobTitle", Eq | In) => Default,
        ("jobTitle", StartsWith | EqNull | Range) => Advanced,
        ("createdDateTime", Range | In) => Default,
        ("createdDateTime", Eq) => Advanced,
        ("proxyAddresses" | "otherMails", AnyEq | AnyStartsWith) => Default,
        ("proxyAddresses" | "otherMails", AnyEndsWith) => Advanced,
        ("businessPhones", AnyEq) => Default,
        _ => No,
    }
}

/// Check every clause against Graph's rules for users.
pub fn check(e: &Expr, advanced: bool) -> Result<(), FilterError> {
    let gate = |prop: usize, k: Kind, op: &'static str| -> Result<(), FilterError> {
        let name = PROPS[prop].name;
        match need(name, k) {
            Need::Default => Ok(()),
            Need::Advanced if advanced => Ok(()),
            Need::Advanced => match k {
                Kind::Ne | Kind::EndsWith | Kind::AnyEndsWith => {
                    Err(FilterError::NeedsAdvanced(op))
                }
                _ => Err(FilterError::Unsupported(name.to_string())),
            },
            Need::No => Err(FilterError::Unsupported(name.to_string())),
        }
    };
    match e {
        Expr::And(a, b) | Expr::Or(a, b) => {
            check(a, advanced)?;
            check(b, advanced)
        }
        Expr::Not(inner) => {
            if !advanced {
                return Err(FilterError::NeedsAdvanced("not"));
            }
            check(inner, advanced)
        }
        Expr::Cmp { prop, op, lit } => {
            type_check(*prop, lit, *op)?;
            let k = match (op, lit) {
                (Op::Eq, Lit::Null) => Kind::EqNull,
                (Op::Eq, _) => Kind::Eq,
                (Op::Ne, _) => Kind::Ne,
                _ => Kind::Range,
            };
            gate(*prop, k, if *op == Op::Ne { "ne" } else { "eq" })
        }
        Expr::In { prop, lits } => {
            for l in lits {
                type_check(*prop, l, Op::Eq)?;
            }
            gate(*prop, Kind::In, "in")
        }
        Expr::Func { func, prop, .. } => {
            if !matches!(PROPS[*prop].slot, Slot::Str(_) | Slot::Id) {
                return Err(FilterError::Unsupported(PROPS[*prop].name.to_string()));
            }
            match func {
                Func::StartsWith => gate(*prop, Kind::StartsWith, "startsWith"),
                Func::EndsWith => gate(*prop, Kind::EndsWith, "endsWith"),
            }
        }
        Expr::Any { prop, cond } => {
            if !matches!(PROPS[*prop].slot, Slot::List(_)) {
                return Err(FilterError::Unsupported(PROPS[*prop].name.to_string()));
            }
            check_item(*prop, cond, &gate)
        }
    }
}

fn check_item(
    prop: usize,
    c: &ItemCond,
    gate: &dyn Fn(usize, Kind, &'static str) -> Result<(), FilterError>,
) -> Result<(), FilterError> {
    match c {
        ItemCond::Eq(_) => gate(prop, Kind::AnyEq, "any"),
        ItemCond::Func(Func::StartsWith, _) => gate(prop, Kind::AnyStartsWith, "startsWith"),
        ItemCond::Func(Func::EndsWith, _) => gate(prop, Kind::AnyEndsWith, "endsWith"),
        ItemCond::Or(a, b) => {
            check_item(prop, a, gate)?;
            check_item(prop, b, gate)
        }
    }
}

fn edm(lit: &Lit) -> &'static str {
    match lit {
        Lit::Str(_) => "Edm.String",
        Lit::Bool(_) => "Edm.Boolean",
        Lit::Num(_) => "Edm.Int32",
        Lit::Null => "null",
    }
}

fn type_check(prop: usize, lit: &Lit, op: Op) -> Result<(), FilterError> {
    let kind = match op {
        Op::Eq => "Equal",
        Op::Ne => "NotEqual",
        Op::Gt => "GreaterThan",
        Op::Ge => "GreaterThanOrEqual",
        Op::Lt => "LessThan",
        Op::Le => "LessThanOrEqual",
    };
    let prop_type = match PROPS[prop].slot {
        Slot::Enabled => "Edm.Boolean",
        Slot::Id | Slot::Str(_) => "Edm.String",
        Slot::List(_) => "Collection(Edm.String)",
        Slot::Extra { .. } => return Err(FilterError::Unsupported(PROPS[prop].name.to_string())),
    };
    let ok = matches!(
        (prop_type, lit),
        (_, Lit::Null) | ("Edm.Boolean", Lit::Bool(_)) | ("Edm.String", Lit::Str(_))
    );
    if ok {
        Ok(())
    } else {
        Err(FilterError::Incompatible(format!(
            "A binary operator with incompatible types was detected. Found operand types '{prop_type}' and '{}' for operator kind '{kind}'.",
            edm(lit)
        )))
    }
}

// ---------------------------------------------------------------- evaluation

fn lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.bytes().any(|b| b.is_ascii_uppercase() || b >= 0x80) {
        std::borrow::Cow::Owned(s.to_lowercase())
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

pub fn eq_ci(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        a.eq_ignore_ascii_case(b)
    } else {
        lower(a) == lower(b)
    }
}

fn starts_ci(s: &str, p: &str) -> bool {
    if s.is_ascii() && p.is_ascii() {
        s.len() >= p.len() && s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    } else {
        lower(s).starts_with(lower(p).as_ref())
    }
}

fn ends_ci(s: &str, p: &str) -> bool {
    if s.is_ascii() && p.is_ascii() {
        s.len() >= p.len() && s.as_bytes()[s.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes())
    } else {
        lower(s).ends_with(lower(p).as_ref())
    }
}

/// A property value as filters see it.
enum V<'a> {
    S(Option<&'a str>),
    B(Option<bool>),
    L(&'a [Box<str>]),
}

fn value(u: &User, prop: usize) -> V<'_> {
    match PROPS[prop].slot {
        Slot::Id => V::S(Some(&u.id)),
        Slot::Str(i) => V::S(u.s(i)),
        Slot::Enabled => V::B(u.enabled),
        Slot::List(i) => V::L(&u.lists[i]),
        Slot::Extra { .. } => V::S(None),
    }
}

fn lit_eq(v: &V<'_>, lit: &Lit) -> bool {
    match (v, lit) {
        (V::S(None), Lit::Null) | (V::B(None), Lit::Null) => true,
        (V::S(Some(s)), Lit::Str(l)) => eq_ci(s, l),
        (V::B(Some(b)), Lit::Bool(l)) => b == l,
        _ => false,
    }
}

fn item_matches(s: &str, c: &ItemCond) -> bool {
    match c {
        ItemCond::Eq(v) => eq_ci(s, v),
        ItemCond::Func(Func::StartsWith, p) => starts_ci(s, p),
        ItemCond::Func(Func::EndsWith, p) => ends_ci(s, p),
        ItemCond::Or(a, b) => item_matches(s, a) || item_matches(s, b),
    }
}

pub fn matches(e: &Expr, u: &User) -> bool {
    match e {
        Expr::And(a, b) => matches(a, u) && matches(b, u),
        Expr::Or(a, b) => matches(a, u) || matches(b, u),
        Expr::Not(a) => !matches(a, u),
        Expr::Cmp { prop, op, lit } => {
            let v = value(u, *prop);
            match op {
                Op::Eq => lit_eq(&v, lit),
                Op::Ne => !lit_eq(&v, lit),
                _ => match (&v, lit) {
                    (V::S(Some(s)), Lit::Str(l)) => {
                        let (a, b) = (lower(s), lower(l));
                        match op {
                            Op::Gt => a > b,
                            Op::Ge => a >= b,
                            Op::Lt => a < b,
                            _ => a <= b,
                        }
                    }
                    _ => false,
                },
            }
        }
        Expr::In { prop, lits } => {
            let v = value(u, *prop);
            lits.iter().any(|l| lit_eq(&v, l))
        }
        Expr::Func { func, prop, arg } => match value(u, *prop) {
            V::S(Some(s)) => match func {
                Func::StartsWith => starts_ci(s, arg),
                Func::EndsWith => ends_ci(s, arg),
            },
            _ => false,
        },
        Expr::Any { prop, cond } => match value(u, *prop) {
            V::L(items) => items.iter().any(|s| item_matches(s, cond)),
            _ => false,
        },
    }
}

/// `id eq '...' or id eq '...'` (the only filter user delta accepts); returns the ids.
pub fn delta_ids(e: &Expr) -> Option<Vec<String>> {
    match e {
        Expr::Cmp {
            prop,
            op: Op::Eq,
            lit: Lit::Str(s),
        } if PROPS[*prop].slot == Slot::Id => Some(vec![s.clone()]),
        Expr::Or(a, b) => {
            let mut v = delta_ids(a)?;
            v.extend(delta_ids(b)?);
            Some(v)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user() -> User {
        let v = json!({"id":"11111111-1111-1111-1111-111111111111","userPrincipalName":"Liam.O'Brien@Example.com",
            "displayName":"Liam O'Brien","accountEnabled":true,"mail":"liam@example.com",
            "proxyAddresses":["SMTP:liam@example.com","smtp:l@x.onmicrosoft.com"]});
        User::from_graph(v.as_object().unwrap()).unwrap()
    }

    fn ok(f: &str, adv: bool) -> bool {
        let e = parse(f).unwrap_or_else(|e| panic!("{f}: {e:?}"));
        check(&e, adv).unwrap_or_else(|e| panic!("{f}: {e:?}"));
        matches(&e, &user())
    }

    #[test]
    fn evaluates() {
        assert!(ok(
            "userPrincipalName eq 'liam.o''brien@example.com'",
            false
        ));
        assert!(ok("startswith(displayName,'liam')", false));
        assert!(ok("endswith(userPrincipalName,'@EXAMPLE.com')", true));
        assert!(ok(
            "accountEnabled eq true and (mail eq 'x' or mail in ('a','LIAM@example.com'))",
            false
        ));
        assert!(ok("proxyAddresses/any(p:startswith(p,'smtp:l@'))", false));
        assert!(!ok("not(accountEnabled eq true)", true));
        assert!(ok("userType eq null", true));
        assert!(ok("id eq '11111111-1111-1111-1111-111111111111'", false));
    }

    #[test]
    fn rules() {
        let e = parse("endswith(userPrincipalName,'@example.com')").unwrap();
        assert_eq!(
            check(&e, false),
            Err(FilterError::NeedsAdvanced("endsWith"))
        );
        let e = parse("onPremisesImmutableId eq 'x'").unwrap();
        assert!(matches!(check(&e, false), Err(FilterError::Unsupported(_))));
        let e = parse("city eq 'x'").unwrap();
        assert!(matches!(check(&e, true), Err(FilterError::Unsupported(_))));
        let e = parse("accountEnabled eq 'true'").unwrap();
        assert!(matches!(
            check(&e, false),
            Err(FilterError::Incompatible(_))
        ));
        assert_eq!(
            parse("bogus eq 'x'"),
            Err(FilterError::UnknownProperty("bogus".into()))
        );
        assert_eq!(
            parse("displayName eq").unwrap_err().message(),
            "Invalid filter clause: Syntax error at position 14 in 'displayName eq'."
        );
        assert!(
            parse("displayName eq 'x")
                .unwrap_err()
                .message()
                .contains("unterminated")
        );
        assert!(parse("displayName eq 'x' and").is_err());
        assert!(parse("contains(displayName,'x')").is_err());
    }
}
