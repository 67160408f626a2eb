//! Parameters and bodies written the way an OpenAPI document says (its
//! `style` and `explode`, its request body's media type), for the HTTP
//! provider. Pure functions of a parameter's binding and a JSON value.
//!
//! | location | style (default first) | `[a, b]` | `{x: 1, y: 2}` |
//! |---|---|---|---|
//! | query | `form`, explode | `id=a&id=b` | `x=1&y=2` |
//! | query | `form`, no explode | `id=a,b` | `id=x,1,y,2` |
//! | query | `spaceDelimited` / `pipeDelimited` | `id=a b` / `id=a\|b` (explode: as `form`) | as `form` |
//! | query | `deepObject` | as `form` | `id[x]=1&id[y]=2` |
//! | path | `simple` | `a,b` | `x,1,y,2` (explode: `x=1,y=2`) |
//! | path | `label` | `.a,b` (explode: `.a.b`) | `.x,1,y,2` (explode: `.x=1.y=2`) |
//! | path | `matrix` | `;id=a,b` (explode: `;id=a;id=b`) | `;id=x,1,y,2` (explode: `;x=1;y=2`) |
//! | header | `simple` | `a,b` | `x,1,y,2` (explode: `x=1,y=2`) |
//!
//! Strings go as they are, numbers and booleans as their JSON text, and a
//! value nested deeper than the table as its JSON text. Path values are
//! percent-encoded here (one segment: a `/` becomes `%2F`); query values are
//! encoded by the HTTP client.

use serde_json::{Map, Value};

use super::openapi::{Param, ParamIn};

/// A scalar as text: a string as it is, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `param` explodes, by its own `explode` or its style's default.
fn explodes(param: &Param) -> bool {
    param.explode.unwrap_or_else(|| style(param) == "form")
}

fn style(param: &Param) -> &str {
    param.style.as_deref().unwrap_or(match param.location {
        ParamIn::Query | ParamIn::Cookie => "form",
        ParamIn::Path | ParamIn::Header => "simple",
    })
}

/// The members of an object as `[k, v, k2, v2]` or `[k=v, k2=v2]`.
fn members(object: &Map<String, Value>, explode: bool, encode: fn(&str) -> String) -> Vec<String> {
    if explode {
        object
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(&text(v))))
            .collect()
    } else {
        object
            .iter()
            .flat_map(|(k, v)| [encode(k), encode(&text(v))])
            .collect()
    }
}

fn same(text: &str) -> String {
    text.to_owned()
}

/// A path parameter, percent-encoded, ready to replace `{name}`.
pub fn path(param: &Param, value: &Value) -> String {
    let explode = explodes(param);
    let name = encode_segment(&param.name);
    let items: Vec<String> = match value {
        Value::Array(items) => items.iter().map(|v| encode_segment(&text(v))).collect(),
        Value::Object(object) => members(object, explode, encode_segment),
        scalar => vec![encode_segment(&text(scalar))],
    };
    match style(param) {
        "label" => {
            let separator = if explode { "." } else { "," };
            format!(".{}", items.join(separator))
        }
        "matrix" => match value {
            Value::Array(_) if explode => items.iter().map(|i| format!(";{name}={i}")).collect(),
            Value::Object(_) if explode => items.iter().map(|i| format!(";{i}")).collect(),
            _ => format!(";{name}={}", items.join(",")),
        },
        _ => items.join(","),
    }
}

/// A query parameter as name/value pairs (not yet encoded).
pub fn query(param: &Param, value: &Value) -> Vec<(String, String)> {
    let name = &param.name;
    let explode = explodes(param);
    match (style(param), value) {
        ("deepObject", Value::Object(object)) => object
            .iter()
            .map(|(k, v)| (format!("{name}[{k}]"), text(v)))
            .collect(),
        (_, Value::Array(items)) if explode => {
            items.iter().map(|v| (name.clone(), text(v))).collect()
        }
        (style, Value::Array(items)) => {
            let separator = match style {
                "spaceDelimited" => " ",
                "pipeDelimited" => "|",
                _ => ",",
            };
            let joined: Vec<String> = items.iter().map(text).collect();
            vec![(name.clone(), joined.join(separator))]
        }
        (_, Value::Object(object)) if explode => {
            object.iter().map(|(k, v)| (k.clone(), text(v))).collect()
        }
        (_, Value::Object(object)) => vec![(name.clone(), members(object, false, same).join(","))],
        (_, scalar) => vec![(name.clone(), text(scalar))],
    }
}

/// A cookie parameter as `name=value` (`form`, unexploded: an array
/// `a,b`, an object `k,v`), the value percent-encoded where a cookie could
/// not hold it (`;`, `,`, spaces, quotes, controls).
pub fn cookie(param: &Param, value: &Value) -> String {
    let text = match value {
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        Value::Object(object) => members(object, false, same).join(","),
        scalar => text(scalar),
    };
    let mut encoded = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_graphic() && !matches!(b, b';' | b'"' | b'\\' | b'%') {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{}={encoded}", param.name)
}

/// A header parameter's value.
pub fn header(param: &Param, value: &Value) -> String {
    match value {
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        Value::Object(object) => members(object, explodes(param), same).join(","),
        scalar => text(scalar),
    }
}

/// The request body for `body_type` (JSON when `None`): its content type and
/// bytes. A form or multipart body must be an object: each member is a
/// field (an array, one field per item; a nested value, its JSON text).
pub fn body(body_type: Option<&str>, value: &Value) -> Result<(String, Vec<u8>), String> {
    let fields = || -> Result<Vec<(String, &Value)>, String> {
        let Value::Object(object) = value else {
            return Err(format!(
                "the body of a {} request must be an object of fields",
                body_type.unwrap_or_default()
            ));
        };
        Ok(object
            .iter()
            .flat_map(|(k, v)| match v {
                Value::Array(items) => items.iter().map(|i| (k.clone(), i)).collect(),
                v => vec![(k.clone(), v)],
            })
            .filter(|(_, v)| !v.is_null())
            .collect())
    };
    match body_type {
        Some("application/x-www-form-urlencoded") => {
            let pairs: Vec<String> = fields()?
                .into_iter()
                .map(|(k, v)| format!("{}={}", form_encode(&k), form_encode(&text(v))))
                .collect();
            Ok((
                "application/x-www-form-urlencoded".into(),
                pairs.join("&").into_bytes(),
            ))
        }
        Some("multipart/form-data") => {
            let boundary: String = std::iter::repeat_with(fastrand::alphanumeric)
                .take(32)
                .collect();
            let mut out = Vec::new();
            for (k, v) in fields()? {
                let (content_type, data) = match v {
                    Value::String(s) => ("text/plain; charset=utf-8", s.clone()),
                    other => ("application/json", other.to_string()),
                };
                // A field name cannot break out of its quotes.
                let k = k.replace(['"', '\r', '\n'], "_");
                out.extend_from_slice(
                    format!(
                        "--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\
                         Content-Type: {content_type}\r\n\r\n{data}\r\n"
                    )
                    .as_bytes(),
                );
            }
            out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            Ok((format!("multipart/form-data; boundary={boundary}"), out))
        }
        _ => Ok(("application/json".into(), value.to_string().into_bytes())),
    }
}

/// Percent-encodes one path segment (everything but RFC 3986's unreserved
/// characters).
pub fn encode_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `application/x-www-form-urlencoded` encoding of one name or value.
fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || matches!(b, b'*' | b'-' | b'.' | b'_') => {
                out.push(b as char)
            }
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param(location: ParamIn, style: Option<&str>, explode: Option<bool>) -> Param {
        Param {
            name: "id".into(),
            location,
            property: None,
            style: style.map(str::to_owned),
            explode,
        }
    }

    #[test]
    fn paths_follow_their_style_and_stay_one_segment() {
        let array = json!(["a/b", 5]);
        let object = json!({"x": 1, "y": "z w"});
        let cases = [
            (None, None, json!("a/b c"), "a%2Fb%20c"),
            (None, None, array.clone(), "a%2Fb,5"),
            (None, None, object.clone(), "x,1,y,z%20w"),
            (None, Some(true), object.clone(), "x=1,y=z%20w"),
            (Some("label"), None, array.clone(), ".a%2Fb,5"),
            (Some("label"), Some(true), array.clone(), ".a%2Fb.5"),
            (Some("matrix"), None, json!(3), ";id=3"),
            (Some("matrix"), None, array.clone(), ";id=a%2Fb,5"),
            (Some("matrix"), Some(true), array.clone(), ";id=a%2Fb;id=5"),
            (Some("matrix"), Some(true), object.clone(), ";x=1;y=z%20w"),
        ];
        for (style, explode, value, expected) in cases {
            let p = param(ParamIn::Path, style, explode);
            assert_eq!(path(&p, &value), expected, "{style:?} {explode:?} {value}");
        }
    }

    #[test]
    fn queries_follow_their_style() {
        let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
            list.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let array = json!(["a", 2, true]);
        let object = json!({"role": "admin", "n": 1});
        let q =
            |style, explode, value: &Value| query(&param(ParamIn::Query, style, explode), value);
        assert_eq!(
            q(None, None, &array),
            pairs(&[("id", "a"), ("id", "2"), ("id", "true")])
        );
        assert_eq!(q(None, Some(false), &array), pairs(&[("id", "a,2,true")]));
        assert_eq!(
            q(Some("spaceDelimited"), Some(false), &array),
            pairs(&[("id", "a 2 true")])
        );
        assert_eq!(
            q(Some("pipeDelimited"), Some(false), &array),
            pairs(&[("id", "a|2|true")])
        );
        assert_eq!(
            q(None, None, &object),
            pairs(&[("n", "1"), ("role", "admin")])
        );
        assert_eq!(
            q(None, Some(false), &object),
            pairs(&[("id", "n,1,role,admin")])
        );
        assert_eq!(
            q(Some("deepObject"), Some(true), &object),
            pairs(&[("id[n]", "1"), ("id[role]", "admin")])
        );
        assert_eq!(q(None, None, &json!(1.5)), pairs(&[("id", "1.5")]));
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("a b/c?"), "a%20b%2Fc%3F");
        assert_eq!(encode_segment("Ünï"), "%C3%9Cn%C3%AF");
    }

    #[test]
    fn cookies_are_form_unexploded_and_cannot_end_early() {
        let p = param(ParamIn::Cookie, None, None);
        assert_eq!(cookie(&p, &json!("abc")), "id=abc");
        assert_eq!(cookie(&p, &json!(["a", 1])), "id=a,1");
        assert_eq!(cookie(&p, &json!("a b;c=d")), "id=a%20b%3Bc=d");
    }

    #[test]
    fn headers_are_simple() {
        let p = param(ParamIn::Header, None, None);
        assert_eq!(header(&p, &json!(["a", 1])), "a,1");
        assert_eq!(header(&p, &json!({"a": 1})), "a,1");
        let exploded = param(ParamIn::Header, None, Some(true));
        assert_eq!(header(&exploded, &json!({"a": 1})), "a=1");
    }

    #[test]
    fn bodies_are_json_forms_or_multipart() {
        let value = json!({"name": "Rex & co", "tags": ["a", "b"], "meta": {"k": 1}, "gone": null});
        let (kind, bytes) = body(None, &value).unwrap();
        assert_eq!(kind, "application/json");
        assert_eq!(serde_json::from_slice::<Value>(&bytes).unwrap(), value);
        let (kind, bytes) = body(Some("application/x-www-form-urlencoded"), &value).unwrap();
        assert_eq!(kind, "application/x-www-form-urlencoded");
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "meta=%7B%22k%22%3A1%7D&name=Rex+%26+co&tags=a&tags=b"
        );
        let (kind, bytes) = body(Some("multipart/form-data"), &value).unwrap();
        let boundary = kind.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8(bytes).unwrap();
        assert_eq!(
            text.matches(&format!("--{boundary}\r\n")).count(),
            4,
            "{text}"
        );
        assert!(
            text.contains(
                "name=\"name\"\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nRex & co\r\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("Content-Type: application/json\r\n\r\n{\"k\":1}\r\n"),
            "{text}"
        );
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
        let err = body(Some("multipart/form-data"), &json!([1])).unwrap_err();
        assert!(err.contains("must be an object"), "{err}");
    }
}
