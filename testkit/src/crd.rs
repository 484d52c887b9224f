//! A strict validator for the `openAPIV3Schema`s of a Kubernetes CustomResourceDefinition.
//!
//! Strict in two ways. A document may not carry a field its schema does not declare (unless the
//! schema says `x-kubernetes-preserve-unknown-fields: true` or has `additionalProperties`), where
//! the API server would silently prune it. And a schema that uses a keyword this validator does
//! not check (`pattern`, `anyOf`, CEL rules...) is refused when loaded, so a pass never hides a
//! constraint nobody checked.
//!
//! Checked: `type` (object, array, string, integer, number, boolean), `properties`,
//! `additionalProperties`, `required`, `enum`, `items`, `nullable`, `format` int32/int64 ranges,
//! `minimum`/`maximum` (and their `exclusive` flags), `minLength`/`maxLength`,
//! `minItems`/`maxItems`, `x-kubernetes-list-type: set` uniqueness and
//! `x-kubernetes-int-or-string`. The root `metadata` is the API server's business: any map passes.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use serde_json::Value;

/// Where the published ClientIntents CRD lives, relative to a directory beside the checkout.
const CLIENTINTENTS_REFERENCE: &str = "reference/clientintents-crd.yaml";

/// The schemas of one CRD, by version name.
#[derive(Debug, Clone)]
pub struct CrdSchemas {
    group: String,
    kind: String,
    versions: BTreeMap<String, Version>,
}

#[derive(Debug, Clone)]
struct Version {
    served: bool,
    schema: Schema,
}

impl CrdSchemas {
    /// Reads a CustomResourceDefinition (`apiextensions.k8s.io/v1`) from a YAML document.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let crd: Value = serde_yaml::from_str(text).context("expected one YAML document")?;
        if crd.get("kind").and_then(Value::as_str) != Some("CustomResourceDefinition") {
            bail!("not a CustomResourceDefinition");
        }
        if crd.get("apiVersion").and_then(Value::as_str) != Some("apiextensions.k8s.io/v1") {
            bail!("only apiextensions.k8s.io/v1 CustomResourceDefinitions are supported");
        }
        let str_at = |pointer: &str| {
            crd.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("the CRD has no {pointer}"))
        };
        let group = str_at("/spec/group")?;
        let kind = str_at("/spec/names/kind")?;
        let mut versions = BTreeMap::new();
        for (i, v) in crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("the CRD has no /spec/versions"))?
            .iter()
            .enumerate()
        {
            let name = v
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("/spec/versions/{i} has no name"))?;
            let served = v.get("served").and_then(Value::as_bool).unwrap_or(false);
            let raw = v
                .pointer("/schema/openAPIV3Schema")
                .ok_or_else(|| anyhow!("version {name} has no schema.openAPIV3Schema"))?;
            let schema = Schema::parse(raw, &format!("/spec/versions/{i}/schema/openAPIV3Schema"))
                .with_context(|| format!("version {name}"))?;
            versions.insert(name.to_owned(), Version { served, schema });
        }
        Ok(CrdSchemas { group, kind, versions })
    }

    /// The published ClientIntents CRD, `shared/reference/clientintents-crd.yaml` in the shared
    /// folder beside the checkout. A panic saying where to put it when it is not there (see
    /// [`crate::need::shared_file`]), or naming the problem when it is there but unreadable.
    pub fn clientintents_reference() -> Self {
        let path = crate::need::shared_file(CLIENTINTENTS_REFERENCE);
        Self::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
    }

    fn load(path: &Path) -> anyhow::Result<Self> {
        Self::from_yaml(&std::fs::read_to_string(path)?)
    }

    /// The CRD's group, e.g. `k8s.otterize.com`.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The CRD's kind, e.g. `ClientIntents`.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The names of the versions the CRD serves.
    pub fn served_versions(&self) -> Vec<&str> {
        self.versions.iter().filter(|(_, v)| v.served).map(|(name, _)| name.as_str()).collect()
    }

    /// Checks a document against the schema its `apiVersion` names. Each error is a JSON pointer
    /// into the document and what is wrong there.
    pub fn validate(&self, doc: &Value) -> Result<(), Vec<String>> {
        let version = self.version_of(doc).map_err(|e| vec![e])?;
        let mut errors = Vec::new();
        validate(&version.schema, doc, &mut String::new(), &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn version_of(&self, doc: &Value) -> Result<&Version, String> {
        let Some(api_version) = doc.get("apiVersion").and_then(Value::as_str) else {
            return Err("/apiVersion: required string missing".to_owned());
        };
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        if group != self.group {
            return Err(format!(
                "/apiVersion: {api_version:?} is not in the CRD's group {:?}",
                self.group
            ));
        }
        let served = self.served_versions().join(", ");
        let version = match self.versions.get(version) {
            Some(v) if v.served => v,
            Some(_) => {
                return Err(format!(
                    "/apiVersion: version {version} is not served (served: {served})"
                ))
            }
            None => {
                return Err(format!(
                    "/apiVersion: no version {version} in the CRD (served: {served})"
                ))
            }
        };
        match doc.get("kind").and_then(Value::as_str) {
            Some(kind) if kind == self.kind => Ok(version),
            Some(kind) => Err(format!("/kind: {kind:?} is not the CRD's kind {:?}", self.kind)),
            None => Err("/kind: required string missing".to_owned()),
        }
    }
}

// === Schema ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

impl Type {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "object" => Type::Object,
            "array" => Type::Array,
            "string" => Type::String,
            "integer" => Type::Integer,
            "number" => Type::Number,
            "boolean" => Type::Boolean,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Type::Object => "object",
            Type::Array => "array",
            Type::String => "string",
            Type::Integer => "integer",
            Type::Number => "number",
            Type::Boolean => "boolean",
        }
    }

    fn admits(self, value: &Value) -> bool {
        match (self, value) {
            (Type::Object, Value::Object(_))
            | (Type::Array, Value::Array(_))
            | (Type::String, Value::String(_))
            | (Type::Boolean, Value::Bool(_)) => true,
            (Type::Number, Value::Number(_)) => true,
            (Type::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default)]
enum Additional {
    /// No `additionalProperties`: only declared properties.
    #[default]
    Undeclared,
    /// `additionalProperties: true`.
    Any,
    /// `additionalProperties: false`.
    Forbidden,
    Schema(Box<Schema>),
}

#[derive(Debug, Clone, Default)]
struct Schema {
    ty: Option<Type>,
    properties: BTreeMap<String, Schema>,
    additional: Additional,
    required: Vec<String>,
    enumeration: Option<Vec<Value>>,
    items: Option<Box<Schema>>,
    nullable: bool,
    preserve_unknown: bool,
    int_or_string: bool,
    /// `(min, max)` of `format: int32` / `int64`.
    int_range: Option<(i64, i64)>,
    minimum: Option<(f64, bool)>,
    maximum: Option<(f64, bool)>,
    min_length: Option<u64>,
    max_length: Option<u64>,
    min_items: Option<u64>,
    max_items: Option<u64>,
    set: bool,
}

/// Keywords that say nothing about which values are valid.
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "default",
    "example",
    "externalDocs",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
];

impl Schema {
    fn parse(raw: &Value, at: &str) -> anyhow::Result<Self> {
        let Value::Object(map) = raw else { bail!("{at}: a schema must be an object") };
        let mut s = Schema::default();
        let uint = |key: &str, v: &Value| {
            v.as_u64().ok_or_else(|| anyhow!("{at}/{key}: expected a non-negative integer"))
        };
        let flag = |key: &str, v: &Value| {
            v.as_bool().ok_or_else(|| anyhow!("{at}/{key}: expected a boolean"))
        };
        let number = |key: &str, v: &Value| {
            v.as_f64().ok_or_else(|| anyhow!("{at}/{key}: expected a number"))
        };
        for (key, v) in map {
            match key.as_str() {
                "type" => {
                    let name = v.as_str().ok_or_else(|| anyhow!("{at}/type: expected a string"))?;
                    s.ty = Some(
                        Type::parse(name)
                            .ok_or_else(|| anyhow!("{at}/type: unknown type {name:?}"))?,
                    );
                }
                "properties" => {
                    let props = v
                        .as_object()
                        .ok_or_else(|| anyhow!("{at}/properties: expected an object"))?;
                    for (name, p) in props {
                        s.properties.insert(
                            name.clone(),
                            Schema::parse(p, &format!("{at}/properties/{}", escape(name)))?,
                        );
                    }
                }
                "additionalProperties" => {
                    s.additional = match v {
                        Value::Bool(true) => Additional::Any,
                        Value::Bool(false) => Additional::Forbidden,
                        other => Additional::Schema(Box::new(Schema::parse(
                            other,
                            &format!("{at}/additionalProperties"),
                        )?)),
                    }
                }
                "required" => {
                    let names =
                        v.as_array().ok_or_else(|| anyhow!("{at}/required: expected an array"))?;
                    s.required = names
                        .iter()
                        .map(|n| {
                            n.as_str()
                                .map(str::to_owned)
                                .ok_or_else(|| anyhow!("{at}/required: expected strings"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "enum" => {
                    s.enumeration = Some(
                        v.as_array()
                            .ok_or_else(|| anyhow!("{at}/enum: expected an array"))?
                            .clone(),
                    )
                }
                "items" => s.items = Some(Box::new(Schema::parse(v, &format!("{at}/items"))?)),
                "nullable" => s.nullable = flag(key, v)?,
                "x-kubernetes-preserve-unknown-fields" => s.preserve_unknown = flag(key, v)?,
                "x-kubernetes-int-or-string" => s.int_or_string = flag(key, v)?,
                "x-kubernetes-list-type" => {
                    s.set = match v.as_str() {
                        Some("set") => true,
                        Some("atomic" | "map") => false,
                        _ => bail!("{at}/x-kubernetes-list-type: expected atomic, set or map"),
                    }
                }
                "format" => {
                    s.int_range = match v.as_str() {
                        Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
                        Some("int64") => Some((i64::MIN, i64::MAX)),
                        // Say nothing about validity beyond `type`.
                        Some("float" | "double" | "password") => None,
                        other => bail!("{at}/format: {other:?} is not checked by this validator"),
                    }
                }
                "minimum" => s.minimum = Some((number(key, v)?, false)),
                "maximum" => s.maximum = Some((number(key, v)?, false)),
                "exclusiveMinimum" | "exclusiveMaximum" => {}
                "minLength" => s.min_length = Some(uint(key, v)?),
                "maxLength" => s.max_length = Some(uint(key, v)?),
                "minItems" => s.min_items = Some(uint(key, v)?),
                "maxItems" => s.max_items = Some(uint(key, v)?),
                k if ANNOTATIONS.contains(&k) => {}
                other => bail!("{at}: the keyword {other:?} is not checked by this validator"),
            }
        }
        // Read after the loop: JSON object order says nothing about which came first.
        if let Some(m) = &mut s.minimum {
            m.1 = map.get("exclusiveMinimum").and_then(Value::as_bool).unwrap_or(false);
        }
        if let Some(m) = &mut s.maximum {
            m.1 = map.get("exclusiveMaximum").and_then(Value::as_bool).unwrap_or(false);
        }
        Ok(s)
    }
}

// === Validation ===

fn validate(schema: &Schema, value: &Value, path: &mut String, errors: &mut Vec<String>) {
    let mut error = |problem: String| {
        errors.push(format!("{}: {problem}", if path.is_empty() { "/" } else { path.as_str() }))
    };

    if value.is_null() {
        if !schema.nullable {
            error(format!(
                "null is not allowed{}",
                schema.ty.map(|t| format!(", expected {}", t.name())).unwrap_or_default()
            ));
        }
        return;
    }
    if schema.int_or_string {
        if !(Type::Integer.admits(value) || value.is_string()) {
            error(format!("expected an integer or a string, found {}", describe(value)));
            return;
        }
    } else if let Some(ty) = schema.ty {
        if !ty.admits(value) {
            error(format!("expected {}, found {}", ty.name(), describe(value)));
            return;
        }
    }
    if let Some(allowed) = &schema.enumeration {
        if !allowed.contains(value) {
            let allowed: Vec<String> = allowed.iter().map(Value::to_string).collect();
            error(format!("{value} is not one of {}", allowed.join(", ")));
        }
    }

    match value {
        Value::Number(n) => {
            if let Some((min, max)) = schema.int_range {
                let in_range = match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => (min..=max).contains(&i),
                    (None, Some(u)) => i64::try_from(u).is_ok_and(|i| i <= max),
                    _ => true,
                };
                if !in_range {
                    error(format!(
                        "{n} is out of range for {}",
                        if max == i64::from(i32::MAX) { "int32" } else { "int64" }
                    ));
                }
            }
            let x = n.as_f64().unwrap_or(f64::NAN);
            if let Some((min, exclusive)) = schema.minimum {
                if x < min || (exclusive && x == min) {
                    error(format!(
                        "{n} is below the minimum {min}{}",
                        if exclusive { " (exclusive)" } else { "" }
                    ));
                }
            }
            if let Some((max, exclusive)) = schema.maximum {
                if x > max || (exclusive && x == max) {
                    error(format!(
                        "{n} is above the maximum {max}{}",
                        if exclusive { " (exclusive)" } else { "" }
                    ));
                }
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if schema.min_length.is_some_and(|min| len < min)
                || schema.max_length.is_some_and(|max| len > max)
            {
                error(format!(
                    "length {len} is outside {}..={}",
                    schema.min_length.unwrap_or(0),
                    schema.max_length.map(|m| m.to_string()).unwrap_or_default()
                ));
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if schema.min_items.is_some_and(|min| len < min)
                || schema.max_items.is_some_and(|max| len > max)
            {
                error(format!(
                    "{len} items is outside {}..={}",
                    schema.min_items.unwrap_or(0),
                    schema.max_items.map(|m| m.to_string()).unwrap_or_default()
                ));
            }
            if schema.set {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        error(format!("item {i} repeats an earlier one in a set: {item}"));
                    }
                }
            }
            if let Some(item_schema) = &schema.items {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("/{i}"));
                    validate(item_schema, item, path, errors);
                    path.truncate(len);
                }
            }
        }
        Value::Object(map) => {
            // The root `metadata` is ObjectMeta, the API server's to check, not the CRD's to describe.
            let any_field = schema.preserve_unknown || path == "/metadata";
            for name in &schema.required {
                if !map.contains_key(name) {
                    error(format!("required field {name:?} is missing"));
                }
            }
            for (name, field) in map {
                let len = path.len();
                path.push('/');
                path.push_str(&escape(name));
                match (schema.properties.get(name), &schema.additional) {
                    (Some(s), _) => validate(s, field, path, errors),
                    (None, Additional::Schema(s)) => validate(s, field, path, errors),
                    (None, Additional::Any) => {}
                    (None, Additional::Undeclared) if any_field => {}
                    (None, Additional::Undeclared | Additional::Forbidden) => {
                        let known: Vec<&str> =
                            schema.properties.keys().map(String::as_str).collect();
                        let known =
                            if known.is_empty() { "none".to_owned() } else { known.join(", ") };
                        errors.push(format!("{path}: unknown field (allowed here: {known})"));
                    }
                }
                path.truncate(len);
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// A JSON pointer token (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "an object".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const WIDGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  names: {kind: Widget, plural: widgets}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          apiVersion: {type: string}
          kind: {type: string}
          metadata: {type: object}
          spec:
            type: object
            required: [size, colour]
            properties:
              size: {type: integer, format: int32, minimum: 1}
              colour: {type: string, enum: [red, green]}
              tags: {type: array, items: {type: string}, x-kubernetes-list-type: set}
              labels: {type: object, additionalProperties: {type: string}}
              extra: {type: object, x-kubernetes-preserve-unknown-fields: true}
              port: {x-kubernetes-int-or-string: true}
              note: {type: string, nullable: true}
  - name: v0
    served: false
    storage: false
    schema:
      openAPIV3Schema: {type: object}
"#;

    fn widgets() -> CrdSchemas {
        CrdSchemas::from_yaml(WIDGETS).unwrap()
    }

    fn widget(spec: Value) -> Value {
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "labels": {"a": "b"}}, "spec": spec})
    }

    fn errors(spec: Value) -> Vec<String> {
        widgets().validate(&widget(spec)).expect_err("the document should be rejected")
    }

    #[test]
    fn a_valid_document_passes() {
        let spec = json!({"size": 3, "colour": "red", "tags": ["a", "b"], "labels": {"x": "y"}, "extra": {"anything": [1, {"goes": true}]}, "port": "http", "note": null});
        assert_eq!(widgets().validate(&widget(spec)), Ok(()));
        assert_eq!(
            widgets().validate(&widget(json!({"size": 1, "colour": "green", "port": 8080}))),
            Ok(())
        );
    }

    #[test]
    fn wrong_types_are_named_with_their_path() {
        assert_eq!(
            errors(json!({"size": "3", "colour": "red"})),
            vec![r#"/spec/size: expected integer, found string "3""#]
        );
        assert_eq!(
            errors(json!({"size": 1.5, "colour": "red"})),
            vec!["/spec/size: expected integer, found number 1.5"]
        );
        assert_eq!(
            errors(json!({"size": 1, "colour": "red", "tags": "a"})),
            vec![r#"/spec/tags: expected array, found string "a""#]
        );
        assert_eq!(
            errors(json!({"size": 1, "colour": "red", "tags": [7]})),
            vec!["/spec/tags/0: expected string, found number 7"]
        );
        assert_eq!(
            errors(json!({"size": 1, "colour": "red", "labels": {"x": 1}})),
            vec!["/spec/labels/x: expected string, found number 1"]
        );
        assert_eq!(
            errors(json!({"size": 1, "colour": "red", "port": true})),
            vec!["/spec/port: expected an integer or a string, found boolean true"]
        );
        assert_eq!(
            errors(json!({"size": null, "colour": "red"})),
            vec!["/spec/size: null is not allowed, expected integer"]
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert_eq!(
            errors(json!({"size": 1, "colour": "red", "weight": 2})),
            vec!["/spec/weight: unknown field (allowed here: colour, extra, labels, note, port, size, tags)"]
        );
        let mut doc = widget(json!({"size": 1, "colour": "red"}));
        doc["status"] = json!({});
        assert_eq!(
            widgets().validate(&doc),
            Err(vec!["/status: unknown field (allowed here: apiVersion, kind, metadata, spec)"
                .to_owned()])
        );
    }

    #[test]
    fn missing_required_fields_are_refused() {
        assert_eq!(
            errors(json!({"colour": "red"})),
            vec![r#"/spec: required field "size" is missing"#]
        );
    }

    #[test]
    fn values_outside_an_enum_or_range_are_refused() {
        assert_eq!(
            errors(json!({"size": 1, "colour": "blue"})),
            vec![r#"/spec/colour: "blue" is not one of "red", "green""#]
        );
        assert_eq!(
            errors(json!({"size": 3_000_000_000u64, "colour": "red"})),
            vec!["/spec/size: 3000000000 is out of range for int32"]
        );
        assert_eq!(
            errors(json!({"size": 0, "colour": "red"})),
            vec!["/spec/size: 0 is below the minimum 1"]
        );
        assert_eq!(
            errors(json!({"size": 1, "colour": "red", "tags": ["a", "a"]})),
            vec![r#"/spec/tags: item 1 repeats an earlier one in a set: "a""#]
        );
    }

    #[test]
    fn several_problems_are_all_reported() {
        assert_eq!(errors(json!({"size": "x", "colour": "blue", "weight": 1})).len(), 3);
    }

    #[test]
    fn the_api_version_and_kind_pick_the_schema() {
        let crd = widgets();
        let spec = json!({"size": 1, "colour": "red"});
        let mut doc = widget(spec);
        doc["apiVersion"] = json!("example.com/v0");
        assert_eq!(
            crd.validate(&doc),
            Err(vec!["/apiVersion: version v0 is not served (served: v1)".to_owned()])
        );
        doc["apiVersion"] = json!("example.com/v9");
        assert_eq!(
            crd.validate(&doc),
            Err(vec!["/apiVersion: no version v9 in the CRD (served: v1)".to_owned()])
        );
        doc["apiVersion"] = json!("other.com/v1");
        assert!(crd.validate(&doc).unwrap_err()[0].starts_with("/apiVersion: "));
        doc["apiVersion"] = json!("example.com/v1");
        doc["kind"] = json!("Gadget");
        assert_eq!(
            crd.validate(&doc),
            Err(vec![r#"/kind: "Gadget" is not the CRD's kind "Widget""#.to_owned()])
        );
    }

    #[test]
    fn schemas_with_keywords_it_cannot_check_are_refused() {
        let with_pattern = WIDGETS.replace(
            "colour: {type: string, enum: [red, green]}",
            "colour: {type: string, pattern: '^r'}",
        );
        let err = CrdSchemas::from_yaml(&with_pattern).unwrap_err();
        assert!(
            format!("{err:#}").contains(
                r#"/properties/spec/properties/colour: the keyword "pattern" is not checked"#
            ),
            "{err:#}"
        );
        assert!(CrdSchemas::from_yaml("kind: ConfigMap").is_err());
    }

    #[test]
    fn the_clientintents_reference_loads() {
        let crd = CrdSchemas::clientintents_reference();
        assert_eq!(crd.group(), "k8s.otterize.com");
        assert_eq!(crd.kind(), "ClientIntents");
        for version in ["v1alpha3", "v2beta1"] {
            assert!(crd.served_versions().contains(&version), "{version} should be served");
        }
        let doc = json!({
            "apiVersion": "k8s.otterize.com/v2beta1",
            "kind": "ClientIntents",
            "metadata": {"name": "frontend", "namespace": "shop"},
            "spec": {"workload": {"name": "frontend"}, "targets": [{"kubernetes": {"name": "cart"}}, {"internet": {"ports": ["443"]}}]},
        });
        assert_eq!(
            crd.validate(&doc),
            Err(vec![r#"/spec/targets/1/internet/ports/0: expected integer, found string "443""#
                .to_owned()])
        );
    }
}
