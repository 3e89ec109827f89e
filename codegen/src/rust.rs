//! Rust emitter, on prost-build's own hook: prost-build generates the messages, and calls
//! a [`prost_build::ServiceGenerator`] for each service with the Rust type paths it
//! resolved itself. Ours ([`StreamServices`]) looks the service up in the [`Model`] (topic,
//! key, schema subject, RPC kind), emits the KafkaSocks module as tokens (`quote!`),
//! formatted with prettyplease, and with gRPC on runs tonic-prost-build's generator first
//! (server only).
//!
//! Names come from prost, never re-derived: type paths from prost's `Method`, key field
//! names from the structs prost generated (a first pass over the same descriptors), the
//! tonic module name from tonic's own output.
//!
//! The stream module imports only `::kafkasocks::codegen` (and `::tonic` with gRPC on).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use heck::ToSnakeCase;
use proc_macro2::{Ident, Literal, TokenStream};
use prost_build::Module;
use quote::{format_ident, quote};

use crate::error::Error;
use crate::load::Loaded;
use crate::model::{KeyType, Method, Model, RpcKind, Service, Subject, UnknownFields};

/// What the Rust emitter is told by the builder, applied on top of the user's
/// `prost_build::Config`.
#[derive(Debug, Clone, Default)]
pub(crate) struct RustOptions {
    pub(crate) grpc: bool,
    pub(crate) extern_paths: Vec<(String, String)>,
    pub(crate) btree_map: Vec<String>,
    pub(crate) bytes: Vec<String>,
}

/// Where `.kafkasocks` messages (Receipt, StreamOptions) live for generated code.
pub(crate) const OPTIONS_RUST_PATH: &str = "::kafkasocks::codegen::options";

/// The version of the contract between generated code and `kafkasocks::codegen`. Bump it
/// when generated code needs something of the runtime that older runtimes lack, or uses
/// it differently; the runtime's `supports_interface` says which numbers it serves.
pub(crate) const CODEGEN_INTERFACE: u32 = 3;

/// The runtime versions generated code is made for: the ones semver-compatible with this
/// generator's version ("0.1.x" for 0.1.*, "1.x" for 1.*).
pub(crate) fn runtime_range() -> String {
    let mut parts = crate::VERSION.split('.');
    let major = parts.next().unwrap_or("0");
    let minor = parts.next().unwrap_or("0");
    if major == "0" { format!("0.{minor}.x") } else { format!("{major}.x") }
}

/// One `<package>.rs` file per package: name -> contents.
pub(crate) fn generate(
    loaded: &Loaded,
    model: &Model,
    opts: &RustOptions,
    mut config: prost_build::Config,
) -> Result<BTreeMap<String, String>, Error> {
    config.extern_path(".kafkasocks", OPTIONS_RUST_PATH);
    for (proto, rust) in &opts.extern_paths {
        config.extern_path(proto, rust);
    }
    if !opts.btree_map.is_empty() {
        config.btree_map(&opts.btree_map);
    }
    if !opts.bytes.is_empty() {
        config.bytes(&opts.bytes);
    }

    // prost-build gets every file (it looks at imported messages to decide derives, and
    // skips extern types itself); only the requested files and what they import are kept.
    let requests: Vec<_> = loaded
        .pool
        .files()
        .map(|f| (Module::from_protobuf_package_name(f.package_name()), f.file_descriptor_proto().clone()))
        .collect();
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<String> = loaded.requested.clone();
    while let Some(name) = stack.pop() {
        if let Some(f) = model.file(&name)
            && wanted.insert(name)
        {
            stack.extend(f.dependencies.iter().cloned());
        }
    }
    let wanted_files: Vec<_> = model.files.iter().filter(|f| wanted.contains(&f.name)).collect();
    let wanted_modules: BTreeSet<String> =
        wanted_files.iter().map(|f| Module::from_protobuf_package_name(&f.package).to_file_name_or("_")).collect();

    // First pass, messages only: the field names prost gave each struct.
    config.service_generator(Box::new(NoServices));
    let messages = config.generate(requests.clone()).map_err(|e| Error::Prost(e.to_string()))?;
    let fields = FieldIndex::new(&messages)?;

    // Second pass, with our generator (after tonic's, when gRPC is on).
    let services: BTreeMap<String, Service> = model
        .files
        .iter()
        .filter(|f| f.requested)
        .flat_map(|f| f.services.iter().map(|s| (s.full_name.clone(), s.clone())))
        .collect();
    let errors = Rc::new(RefCell::new(Vec::new()));
    let tonic = opts.grpc.then(|| {
        tonic_prost_build::configure().build_client(false).build_server(true).build_transport(false).service_generator()
    });
    config.service_generator(Box::new(StreamServices { services, fields, tonic, errors: errors.clone() }));
    let modules = config.generate(requests).map_err(|e| Error::Prost(e.to_string()))?;
    if let Some(e) = errors.borrow_mut().drain(..).next() {
        return Err(e);
    }

    // One file per package; a package may span several .proto files.
    let mut out: BTreeMap<String, (BTreeSet<String>, String)> = BTreeMap::new();
    for (module, code) in modules {
        let name = module.to_file_name_or("_");
        if wanted_modules.contains(&name) {
            let body = code.strip_prefix("// This file is @generated by prost-build.\n").unwrap_or(&code).to_owned();
            out.entry(name).or_default().1 = body;
        }
    }
    for f in &wanted_files {
        let name = Module::from_protobuf_package_name(&f.package).to_file_name_or("_");
        if let Some(entry) = out.get_mut(&name) {
            entry.0.insert(f.name.clone());
        }
    }
    Ok(out
        .into_iter()
        .map(|(name, (sources, body))| {
            let sources: Vec<_> = sources.into_iter().collect();
            let stamp = format!(
                "// @generated by kafkasocks-gen v{} from {}. DO NOT EDIT.\n",
                crate::VERSION,
                if sources.is_empty() { "(no source)".to_owned() } else { sources.join(", ") }
            );
            (name, stamp + &body)
        })
        .collect())
}

/// The first pass generates no services.
struct NoServices;

impl prost_build::ServiceGenerator for NoServices {
    fn generate(&mut self, _service: prost_build::Service, _buf: &mut String) {}
}

/// The field names of the structs prost generated: absolute module path + struct name
/// (as prost spells them, `r#` included) -> field number -> field identifier.
struct FieldIndex {
    structs: BTreeMap<Vec<String>, BTreeMap<u32, String>>,
}

impl FieldIndex {
    fn new(modules: &std::collections::HashMap<Module, String>) -> Result<FieldIndex, Error> {
        let mut index = FieldIndex { structs: BTreeMap::new() };
        for (module, code) in modules {
            let file = syn::parse_file(code).map_err(|e| Error::Prost(format!("prost-build output: {e}")))?;
            let base: Vec<String> = module.parts().map(str::to_owned).collect();
            index.collect(&base, &file.items);
        }
        Ok(index)
    }

    fn collect(&mut self, path: &[String], items: &[syn::Item]) {
        for item in items {
            match item {
                syn::Item::Struct(s) => {
                    let mut fields = BTreeMap::new();
                    for f in &s.fields {
                        if let (Some(ident), Some(tag)) = (&f.ident, f.attrs.iter().find_map(prost_tag)) {
                            fields.insert(tag, ident.to_string());
                        }
                    }
                    let mut key = path.to_vec();
                    key.push(s.ident.to_string());
                    self.structs.insert(key, fields);
                }
                syn::Item::Mod(m) => {
                    if let Some((_, items)) = &m.content {
                        let mut inner = path.to_vec();
                        inner.push(m.ident.to_string());
                        self.collect(&inner, items);
                    }
                }
                _ => {}
            }
        }
    }

    /// The identifier of field `number` of the message prost calls `rust_type` in
    /// `package`'s module; `None` for types prost did not generate here (extern paths).
    fn field(&self, package: &str, rust_type: &str, number: u32) -> Option<&str> {
        if rust_type.starts_with("::") || rust_type.starts_with("crate::") {
            return None;
        }
        let mut path: Vec<String> = Module::from_protobuf_package_name(package).parts().map(str::to_owned).collect();
        for segment in rust_type.split("::") {
            if segment == "super" {
                path.pop()?;
            } else {
                path.push(segment.to_owned());
            }
        }
        self.structs.get(&path)?.get(&number).map(String::as_str)
    }
}

/// The `tag = "N"` of a `#[prost(...)]` field attribute.
fn prost_tag(attr: &syn::Attribute) -> Option<u32> {
    if !attr.path().is_ident("prost") {
        return None;
    }
    let mut tag = None;
    let parsed = attr.parse_nested_meta(|meta| {
        if meta.input.peek(syn::Token![=]) {
            let value: syn::Lit = meta.value()?.parse()?;
            if let (true, syn::Lit::Str(s)) = (meta.path.is_ident("tag"), &value) {
                tag = s.value().parse().ok();
            }
        }
        Ok(())
    });
    parsed.ok().and(tag)
}

/// Our generator: the KafkaSocks module of every stream service of the model, after
/// tonic's server when gRPC is on. Errors are collected for after `Config::generate`.
struct StreamServices {
    /// The stream services of the requested files, by full name.
    services: BTreeMap<String, Service>,
    fields: FieldIndex,
    tonic: Option<Box<dyn prost_build::ServiceGenerator>>,
    errors: Rc<RefCell<Vec<Error>>>,
}

impl prost_build::ServiceGenerator for StreamServices {
    fn generate(&mut self, service: prost_build::Service, buf: &mut String) {
        let full_name = if service.package.is_empty() {
            service.proto_name.clone()
        } else {
            format!("{}.{}", service.package, service.proto_name)
        };
        // Plain gRPC services (no stream options) and services of imported files are not ours.
        let Some(stream) = self.services.get(&full_name) else { return };
        let mut tonic_module = None;
        if let Some(tonic) = &mut self.tonic {
            let mut code = String::new();
            tonic.generate(service.clone(), &mut code);
            match tonic_server_module(&code) {
                Ok(m) => tonic_module = Some(m),
                Err(e) => self.errors.borrow_mut().push(e),
            }
            buf.push_str(&code);
        }
        let emitted = service_module(stream, &service, &self.fields, tonic_module.as_ref()).and_then(|tokens| {
            syn::parse2::<syn::File>(tokens)
                .map_err(|e| Error::Codegen(format!("generated tokens of {full_name}: {e}")))
        });
        match emitted {
            Ok(file) => {
                if !buf.is_empty() && !buf.ends_with("\n\n") {
                    buf.push('\n');
                }
                buf.push_str(&prettyplease::unparse(&file));
            }
            Err(e) => self.errors.borrow_mut().push(e),
        }
    }

    fn finalize(&mut self, buf: &mut String) {
        if let Some(tonic) = &mut self.tonic {
            tonic.finalize(buf);
        }
    }

    fn finalize_package(&mut self, package: &str, buf: &mut String) {
        if let Some(tonic) = &mut self.tonic {
            tonic.finalize_package(package, buf);
        }
    }
}

/// The name of the server module tonic just generated (`<service>_server`).
fn tonic_server_module(code: &str) -> Result<Ident, Error> {
    let file = syn::parse_file(code).map_err(|e| Error::Codegen(format!("tonic-prost-build output: {e}")))?;
    file.items
        .iter()
        .find_map(|item| match item {
            syn::Item::Mod(m) if m.ident.to_string().ends_with("_server") => Some(m.ident.clone()),
            _ => None,
        })
        .ok_or_else(|| Error::Codegen("tonic-prost-build generated no server module".into()))
}

/// A type as prost spelled it for the package module, as seen from the stream module one
/// level below: relative paths get a `super::`; absolute paths (extern types, `::prost_types`),
/// primitives (wrapper types) and `()` (`google.protobuf.Empty`) stay as they are.
fn type_from_stream_module(rust_type: &str) -> Result<TokenStream, Error> {
    let bad = |e: syn::Error| Error::Codegen(format!("prost's type path {rust_type:?}: {e}"));
    let ty: syn::Type = syn::parse_str(rust_type).map_err(bad)?;
    let relative = match &ty {
        syn::Type::Path(p) => {
            let first = p.path.segments.first().map(|s| s.ident.to_string()).unwrap_or_default();
            let primitive = p.path.segments.len() == 1
                && matches!(first.as_str(), "bool" | "f32" | "f64" | "i32" | "i64" | "u32" | "u64" | "str");
            p.qself.is_none() && p.path.leading_colon.is_none() && first != "crate" && !primitive
        }
        _ => false,
    };
    if relative {
        let ty: syn::Type = syn::parse_str(&format!("super::{rust_type}")).map_err(bad)?;
        Ok(quote!(#ty))
    } else {
        Ok(quote!(#ty))
    }
}

/// The Rust identifier of the request's key field: prost's, from the struct it generated;
/// for request types from an `extern_path` (not generated here), prost's convention
/// (snake case, raw when a keyword), which is what a prost-generated extern crate has.
fn key_ident(service: &Service, m: &Method, input_rust: &str, fields: &FieldIndex) -> Result<Option<Ident>, Error> {
    let Some(key) = &m.key else { return Ok(None) };
    let name = match fields.field(&service.package, input_rust, key.number) {
        Some(name) => name.to_owned(),
        None => key.name.to_snake_case(),
    };
    let parsed = syn::parse_str::<Ident>(&name).or_else(|_| syn::parse_str::<Ident>(&format!("r#{name}")));
    match parsed {
        Ok(id) => Ok(Some(id)),
        Err(_) => Err(Error::stream(
            m.location.clone(),
            format!("the key field {:?} of {} has no usable Rust name", key.name, m.input),
            "rename the field, or pick another key field",
        )),
    }
}

fn doc(lines: &[String]) -> TokenStream {
    let lines = lines.iter().map(|l| {
        let text = format!(" {}", l.trim_end());
        quote!(#[doc = #text])
    });
    quote!(#(#lines)*)
}

fn docs(paragraphs: &[&[String]]) -> TokenStream {
    let mut lines: Vec<String> = Vec::new();
    for p in paragraphs.iter().filter(|p| !p.is_empty()) {
        if !lines.is_empty() {
            lines.push(String::new());
        }
        lines.extend(p.iter().cloned());
    }
    doc(&lines)
}

fn text(s: impl Into<String>) -> Vec<String> {
    s.into().lines().map(str::to_owned).collect()
}

/// A name prost made (`r#type`, `self_`) as an identifier.
fn prost_ident(s: &str) -> Result<Ident, Error> {
    syn::parse_str::<Ident>(s).map_err(|e| Error::Codegen(format!("prost's identifier {s:?}: {e}")))
}

/// The stream module of one service, plus the re-exports at package level. `stream` is
/// the model's view (topics, keys, kinds), `prost` carries the Rust names prost resolved.
fn service_module(
    stream: &Service,
    prost: &prost_build::Service,
    fields: &FieldIndex,
    tonic_module: Option<&Ident>,
) -> Result<TokenStream, Error> {
    let base = prost_ident(&prost.name)?;
    let module = format_ident!("{}_kafkasocks", prost.name.to_snake_case());
    let hooks = format_ident!("{}Hooks", base);
    let default_hooks = format_ident!("{}DefaultHooks", base);
    let gateway = format_ident!("{}Gateway", base);
    let grpc_ty = format_ident!("{}Grpc", base);
    let full_name = &stream.full_name;

    let mut hook_methods = Vec::new();
    let mut adapters = Vec::new();
    let mut registrations = Vec::new();
    let mut schemas: Vec<String> = Vec::new();
    let mut grpc_methods = Vec::new();
    for m in &stream.methods {
        let Some(pm) = prost.methods.iter().find(|pm| pm.proto_name == m.name) else {
            return Err(Error::Codegen(format!("prost-build did not pass method {} of {full_name}", m.name)));
        };
        let snake = pm.name.trim_start_matches("r#");
        let input = type_from_stream_module(&pm.input_type)?;
        let output = type_from_stream_module(&pm.output_type)?;
        let key_expr = key_ident(stream, m, &pm.input_type, fields)?.map(|field| key_expr(m, &field));
        let route = &m.route;
        let topic = &m.topic;
        let adapter =
            format_ident!("{}{}", pm.proto_name, if m.kind == RpcKind::Unary { "Publish" } else { "Subscribe" });
        let method_doc: &[String] = &m.comments.lines;
        match m.kind {
            RpcKind::ServerStreaming => {
                let authorize = format_ident!("authorize_{}", snake);
                let filter = format_ident!("filter_{}", snake);
                let auth_doc = docs(&[
                    &text(format!("Authorizes a subscription to `{route}` (topic `{topic}`).")),
                    method_doc,
                    &text(
                        "Default: everyone may subscribe. Return an error (e.g. `Status::permission_denied`) to \
                         refuse. May be an `async fn`: it runs once per subscription, before any record is read.",
                    ),
                ]);
                let filter_doc = docs(&[&text(format!(
                    "An extra filter on the records of `{route}`, applied after the key match; it sees each \
                     record decoded.\nDefault: none (every record whose key matches is delivered). Records that \
                     do not decode are not delivered when a filter is set. The filter runs for every record, so \
                     it is a plain function."
                ))]);
                hook_methods.push(quote! {
                    #auth_doc
                    fn #authorize(
                        &self,
                        ctx: &__ks::RequestContext,
                        request: &#input,
                    ) -> impl ::core::future::Future<Output = ::core::result::Result<(), __ks::Status>> + ::core::marker::Send {
                        let _ = (ctx, request);
                        ::core::future::ready(::core::result::Result::Ok(()))
                    }
                    #filter_doc
                    fn #filter(&self, ctx: &__ks::RequestContext, request: &#input) -> ::core::option::Option<MessageFilter<#output>> {
                        let _ = (ctx, request);
                        ::core::option::Option::None
                    }
                });
                let plan = match &key_expr {
                    Some(k) => quote! {
                        let mut plan = match #k {
                            ::core::option::Option::Some(key) => __ks::SubscriptionPlan::key(key),
                            ::core::option::Option::None => __ks::SubscriptionPlan::all(),
                        };
                    },
                    None => quote!(let mut plan = __ks::SubscriptionPlan::all();),
                };
                adapters.push(quote! {
                    struct #adapter<H>(::std::sync::Arc<H>);
                    impl<H: #hooks> __ks::SubscribeHook for #adapter<H> {
                        fn plan(
                            &self,
                            ctx: &__ks::RequestContext,
                            request: __ks::Bytes,
                        ) -> __ks::BoxFuture<::core::result::Result<__ks::SubscriptionPlan, __ks::Status>> {
                            let hooks = ::std::sync::Arc::clone(&self.0);
                            let ctx = ::core::clone::Clone::clone(ctx);
                            ::std::boxed::Box::pin(async move {
                                let request: #input = __ks::decode(&request)?;
                                hooks.#authorize(&ctx, &request).await?;
                                #plan
                                if let ::core::option::Option::Some(filter) = hooks.#filter(&ctx, &request) {
                                    plan = plan.filter(move |record: &__ks::RecordView<'_>| {
                                        match <#output as __ks::prost::Message>::decode(record.payload) {
                                            ::core::result::Result::Ok(value) => filter(&value),
                                            ::core::result::Result::Err(_) => false,
                                        }
                                    });
                                }
                                ::core::result::Result::Ok(plan)
                            })
                        }
                    }
                });
                match &m.record_types {
                    Some(types) => {
                        let members = types.members.iter().map(|(name, field)| quote!(.member(#name, #field)));
                        let others = if types.skip_others { quote!(.others(__ks::OtherTypes::Skip)) } else { quote!() };
                        registrations.push(quote! {
                            .subscribe_with_types(#route, #topic, #adapter(::std::sync::Arc::clone(&self.hooks)),
                                __ks::RecordTypes::new()#(#members)*#others)
                        });
                    }
                    None => registrations.push(quote! {
                        .subscribe(#route, #topic, #adapter(::std::sync::Arc::clone(&self.hooks)))
                    }),
                }
            }
            RpcKind::Unary => {
                let prepare = format_ident!("prepare_{}", snake);
                let prepare_doc = docs(&[
                    &text(format!(
                        "Validates and enriches a publish to `{route}` (topic `{topic}`) before it is produced."
                    )),
                    method_doc,
                    &text(
                        "Default: the request unchanged. Return an error to refuse the publish. What is \
                         produced is the returned message, encoded; fields the request type does not declare \
                         are dropped, refused or kept as the stream's `unknown_fields` option says (default: \
                         dropped). May be an `async fn`.",
                    ),
                ]);
                hook_methods.push(quote! {
                    #prepare_doc
                    fn #prepare(
                        &self,
                        ctx: &__ks::RequestContext,
                        request: #input,
                    ) -> impl ::core::future::Future<Output = ::core::result::Result<#input, __ks::Status>> + ::core::marker::Send {
                        let _ = ctx;
                        ::core::future::ready(::core::result::Result::Ok(request))
                    }
                });
                let key = key_expr.clone().unwrap_or_else(|| quote!(::core::option::Option::None));
                let input_name = &m.input;
                let unknown_check = match m.unknown_fields {
                    UnknownFields::Reject => quote! {
                        if __ks::prost::Message::encoded_len(&original) != payload.len() {
                            return ::core::result::Result::Err(__ks::Status::invalid_argument(::std::format!(
                                "the request has fields {} does not declare (or is not encoded canonically); \
                                 this stream refuses them", #input_name
                            )));
                        }
                    },
                    UnknownFields::Drop | UnknownFields::Keep => quote!(),
                };
                let produced = match m.unknown_fields {
                    UnknownFields::Keep => quote! {
                        if request == original { payload } else { __ks::Bytes::from(__ks::prost::Message::encode_to_vec(&request)) }
                    },
                    UnknownFields::Drop | UnknownFields::Reject => quote! {
                        __ks::Bytes::from(__ks::prost::Message::encode_to_vec(&request))
                    },
                };
                adapters.push(quote! {
                    struct #adapter<H>(::std::sync::Arc<H>);
                    impl<H: #hooks> __ks::PublishHook for #adapter<H> {
                        fn prepare(
                            &self,
                            ctx: &__ks::RequestContext,
                            payload: __ks::Bytes,
                        ) -> __ks::BoxFuture<::core::result::Result<__ks::OutgoingRecord, __ks::Status>> {
                            let hooks = ::std::sync::Arc::clone(&self.0);
                            let ctx = ::core::clone::Clone::clone(ctx);
                            ::std::boxed::Box::pin(async move {
                                let original: #input = __ks::decode(&payload)?;
                                #unknown_check
                                let request = hooks.#prepare(&ctx, ::core::clone::Clone::clone(&original)).await?;
                                let payload = #produced;
                                ::core::result::Result::Ok(__ks::OutgoingRecord {
                                    key: #key,
                                    payload,
                                    headers: ::std::vec::Vec::new(),
                                })
                            })
                        }
                    }
                });
                match &m.schema {
                    Some(schema) => {
                        let schema = registry_schema_expr(schema, &mut schemas);
                        registrations.push(quote! {
                            .publish_with_schema(#route, #topic, #adapter(::std::sync::Arc::clone(&self.hooks)), #schema)
                        });
                    }
                    None => registrations.push(quote! {
                        .publish(#route, #topic, #adapter(::std::sync::Arc::clone(&self.hooks)))
                    }),
                }
            }
        }
        if let Some(key) = &m.key_message {
            let schema = registry_schema_expr(&key.schema, &mut schemas);
            let field = key.field;
            registrations.push(quote! {
                .key_message(#route, __ks::KeyMessage::new(#schema, #field))
            });
        }
        if tonic_module.is_some() {
            grpc_methods.push(grpc_method(m, pm, &input, &output)?);
        }
    }
    let schema_consts = schemas.iter().enumerate().map(|(i, s)| {
        let c = format_ident!("SCHEMA_{}", i);
        quote! {
            /// The `.proto` source registered with the Schema Registry.
            const #c: &str = #s;
        }
    });

    let service_doc: &[String] = &stream.comments.lines;
    let hooks_doc = docs(&[
        &text(format!("Decides who may use `{full_name}` and what reaches Kafka.")),
        service_doc,
        &text(format!(
            "Every method has a default: implement only what you need, or use [`{default_hooks}`].\n\
             Subscriptions: `authorize_*` then the key match, then the optional `filter_*`. \
             Publishes: `prepare_*` validates and enriches the request before it is produced.\n\
             `authorize_*` and `prepare_*` return futures: implement them as `async fn` when they \
             need to wait (a database, a token service)."
        )),
    ]);
    let gateway_doc = docs(&[&text(format!(
        "Serves `{full_name}` on a KafkaSocks gateway: \
         `Gateway::builder(config).streams({gateway}::new(hooks).streams())`."
    ))]);
    let route_list: Vec<String> =
        stream.methods.iter().map(|m| format!("`{}` -> topic `{}`", m.route, m.topic)).collect();
    let streams_doc = docs(&[
        &text("The streams of this service, for `GatewayBuilder::streams` (merge with others with `Streams::merge`):"),
        &route_list,
    ]);

    let grpc_items = match tonic_module {
        Some(server_mod) => grpc_items(stream, prost, server_mod, &grpc_ty, &grpc_methods)?,
        None => TokenStream::new(),
    };
    let grpc_export = if tonic_module.is_some() { quote!(, #grpc_ty) } else { TokenStream::new() };

    let range = runtime_range();
    let interface = Literal::u32_unsuffixed(CODEGEN_INTERFACE);
    let version = crate::VERSION;
    let module_doc = docs(&[
        &text(format!("KafkaSocks streams of `{full_name}`.")),
        &text(format!(
            "Generated by kafkasocks-build {version} for the kafkasocks runtime {range} (codegen interface \
             {CODEGEN_INTERFACE}): a build against a runtime that does not support it fails with a message \
             saying so."
        )),
    ]);
    let mismatch = format!(
        "this code was generated by kafkasocks-build {version} for the kafkasocks runtime {range} (codegen \
         interface {CODEGEN_INTERFACE}), which this kafkasocks does not support: use matching versions of \
         kafkasocks and kafkasocks-build, or regenerate"
    );
    Ok(quote! {
        #module_doc
        pub mod #module {
            #![allow(
                unused_imports,
                unused_qualifications,
                dead_code,
                missing_docs,
                unreachable_pub,
                clippy::all,
                clippy::pedantic,
                clippy::nursery
            )]
            use ::kafkasocks::codegen as __ks;

            const _: () = ::core::assert!(__ks::supports_interface(#interface), #mismatch);

            /// A typed record filter: true to deliver the record.
            pub type MessageFilter<T> = ::std::sync::Arc<dyn Fn(&T) -> bool + Send + Sync>;

            #hooks_doc
            pub trait #hooks: Send + Sync + 'static {
                #(#hook_methods)*
            }

            /// Hooks that keep every default: key match only, requests produced unchanged.
            #[derive(Debug, Clone, Copy, Default)]
            pub struct #default_hooks;

            impl #hooks for #default_hooks {}

            #gateway_doc
            pub struct #gateway<H> {
                hooks: ::std::sync::Arc<H>,
            }

            impl<H> ::core::clone::Clone for #gateway<H> {
                fn clone(&self) -> Self {
                    Self { hooks: ::std::sync::Arc::clone(&self.hooks) }
                }
            }

            impl<H> ::core::fmt::Debug for #gateway<H> {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.debug_struct(stringify!(#gateway)).finish_non_exhaustive()
                }
            }

            impl<H: #hooks> #gateway<H> {
                /// The fully-qualified service name.
                pub const SERVICE: &'static str = #full_name;

                /// Streams served with these hooks.
                pub fn new(hooks: H) -> Self {
                    Self { hooks: ::std::sync::Arc::new(hooks) }
                }

                /// Streams sharing hooks that are already in an `Arc`.
                pub fn from_arc(hooks: ::std::sync::Arc<H>) -> Self {
                    Self { hooks }
                }

                /// The hooks.
                pub fn hooks(&self) -> &::std::sync::Arc<H> {
                    &self.hooks
                }

                #streams_doc
                pub fn streams(&self) -> __ks::Streams {
                    __ks::Streams::new()
                        #(#registrations)*
                }
            }

            #(#adapters)*

            #(#schema_consts)*

            #grpc_items
        }
        // An application uses some of these, not all: no unused-import warnings for it.
        #[allow(unused_imports)]
        pub use self::#module::{#hooks, #default_hooks, #gateway #grpc_export};
    })
}

/// `RegistrySchema::protobuf(record, SCHEMA_n, indexes)` with its subject and references,
/// the sources as `SCHEMA_n` constants (each once).
fn registry_schema_expr(schema: &crate::model::RegistrySchema, schemas: &mut Vec<String>) -> TokenStream {
    let constant = schema_constant(&schema.schema, schemas);
    let record = &schema.record;
    let subject = match &schema.subject {
        Subject::TopicName => quote!(),
        Subject::RecordName => quote!(.subject_name_strategy(__ks::SubjectNameStrategy::RecordName)),
        Subject::TopicRecordName => quote!(.subject_name_strategy(__ks::SubjectNameStrategy::TopicRecordName)),
        Subject::Named(name) => quote!(.subject(#name)),
    };
    let indexes = &schema.message_indexes;
    let references = schema_references(&schema.references, schemas);
    quote!(__ks::RegistrySchema::protobuf(#record, #constant, ::std::vec![#(#indexes),*]) #subject #(#references)*)
}

/// The `SCHEMA_n` constant holding `source`.
fn schema_constant(source: &str, schemas: &mut Vec<String>) -> Ident {
    let idx = match schemas.iter().position(|s| s == source) {
        Some(i) => i,
        None => {
            schemas.push(source.to_owned());
            schemas.len() - 1
        }
    };
    format_ident!("SCHEMA_{}", idx)
}

/// `.reference(SchemaReference::new(name, subject, SCHEMA_n).reference(…))` for each
/// import, the sources as `SCHEMA_n` constants shared with the schemas themselves.
fn schema_references(refs: &[crate::model::SchemaReference], schemas: &mut Vec<String>) -> Vec<TokenStream> {
    refs.iter()
        .map(|r| {
            let constant = schema_constant(&r.schema, schemas);
            let name = &r.name;
            let nested = schema_references(&r.references, schemas);
            quote!(.reference(__ks::SchemaReference::new(#name, #name, #constant)#(#nested)*))
        })
        .collect()
}

/// The key of a request, `Option<Bytes>`, from the key field's Rust identifier.
fn key_expr(m: &Method, field: &Ident) -> TokenStream {
    let Some(key) = &m.key else { return quote!(::core::option::Option::None) };
    match (key.ty, key.optional) {
        (KeyType::String, false) => quote!(__ks::key_from_str(&request.#field)),
        (KeyType::String, true) => quote!(request.#field.as_deref().and_then(__ks::key_from_str)),
        (KeyType::Bytes, false) => quote!(__ks::key_from_bytes(&request.#field)),
        (KeyType::Bytes, true) => quote!(request.#field.as_deref().and_then(__ks::key_from_bytes)),
        (KeyType::Integer(_), false) => quote!(__ks::key_from_int(request.#field)),
        (KeyType::Integer(_), true) => quote!(request.#field.and_then(__ks::key_from_int)),
    }
}

/// One method of the tonic service trait, over `LocalStreams`. Names as tonic gives them:
/// the method is prost's `Method::name`, the stream type `<proto name>Stream`.
fn grpc_method(
    m: &Method,
    pm: &prost_build::Method,
    input: &TokenStream,
    output: &TokenStream,
) -> Result<TokenStream, Error> {
    let name = prost_ident(&pm.name)?;
    let route = &m.route;
    Ok(match m.kind {
        RpcKind::ServerStreaming => {
            let stream = format_ident!("{}Stream", pm.proto_name);
            let output_name = &m.output;
            quote! {
                type #stream = ::tonic::codegen::BoxStream<#output>;

                async fn #name(&self, request: ::tonic::Request<#input>) -> ::core::result::Result<::tonic::Response<Self::#stream>, ::tonic::Status> {
                    use ::tonic::codegen::tokio_stream::StreamExt as _;
                    let (principal, handshake) = caller(&self.local, #route, &request).await?;
                    let start = __ks::start_from_metadata(metadata_text(request.metadata(), START_METADATA)).map_err(status)?;
                    let payload = __ks::prost::Message::encode_to_vec(request.get_ref());
                    let records = self.local.subscribe_from(principal, ::core::option::Option::Some(&handshake), #route, &payload, start).await.map_err(status)?;
                    let values = records.map(|item| match item {
                        ::core::result::Result::Ok(d) => <#output as __ks::prost::Message>::decode(&d.payload[..]).map_err(|e| {
                            ::tonic::Status::internal(::std::format!(
                                "record {}@{} is not a {}: {}", d.partition, d.offset, #output_name, e
                            ))
                        }),
                        ::core::result::Result::Err(s) => ::core::result::Result::Err(status(s)),
                    });
                    ::core::result::Result::Ok(::tonic::Response::new(::std::boxed::Box::pin(values)))
                }
            }
        }
        RpcKind::Unary => quote! {
            async fn #name(&self, request: ::tonic::Request<#input>) -> ::core::result::Result<::tonic::Response<#output>, ::tonic::Status> {
                let (principal, handshake) = caller(&self.local, #route, &request).await?;
                let key = metadata_text(request.metadata(), IDEMPOTENCY_METADATA).unwrap_or_default();
                let key = __ks::Bytes::copy_from_slice(key.as_bytes());
                let payload = __ks::Bytes::from(__ks::prost::Message::encode_to_vec(request.get_ref()));
                let receipt = self.local.publish_from(principal, ::core::option::Option::Some(&handshake), #route, payload, key).await.map_err(status)?;
                ::core::result::Result::Ok(::tonic::Response::new(receipt.into()))
            }
        },
    })
}

/// `<Service>Grpc`: the tonic service trait implemented over `LocalStreams`. The trait is
/// prost's service name, the server `<name>Server`, in the module tonic generated.
fn grpc_items(
    stream: &Service,
    prost: &prost_build::Service,
    server_mod: &Ident,
    grpc_ty: &Ident,
    methods: &[TokenStream],
) -> Result<TokenStream, Error> {
    let trait_name = prost_ident(&prost.name)?;
    let tonic_server = format_ident!("{}Server", trait_name);
    let grpc_doc = format!(" `{}` over gRPC (tonic), fed by the gateway's streams in process:", stream.full_name);
    Ok(quote! {
        /// Request metadata naming where a subscription starts: `latest` (default),
        /// `earliest`, `ts:<unix ms>` or `cursor:<base64 of Cursor::to_bytes()>`.
        pub const START_METADATA: &str = "kafkasocks-start";
        /// Request metadata carrying a publish's idempotency key (at most 64 bytes of text).
        pub const IDEMPOTENCY_METADATA: &str = "kafkasocks-idempotency-key";

        #[doc = #grpc_doc]
        /// server-streaming methods subscribe, unary methods publish and answer with the receipt.
        /// The service's hooks run inside the gateway (register `streams()` of the matching
        /// gateway type on it), once per request, whichever transport it came by. Each call
        /// is authenticated by the gateway's authenticator with the bearer token of its
        /// `authorization` metadata, and checked against the gateway's permissions and
        /// per-principal publish budget, as a WebSocket session is.
        #[derive(Clone)]
        pub struct #grpc_ty {
            local: __ks::LocalStreams,
        }

        impl ::core::fmt::Debug for #grpc_ty {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(stringify!(#grpc_ty)).field("local", &self.local).finish_non_exhaustive()
            }
        }

        impl #grpc_ty {
            /// Serves from `local` (`Gateway::local_streams()`).
            pub fn new(local: __ks::LocalStreams) -> Self {
                Self { local }
            }

            /// The tonic service, for `tonic::transport::Server::add_service`, with the
            /// gateway's message size bound for requests and responses.
            pub fn into_service(self) -> super::#server_mod::#tonic_server<Self> {
                let max = self.local.max_message_bytes();
                super::#server_mod::#tonic_server::new(self).max_decoding_message_size(max).max_encoding_message_size(max)
            }
        }

        /// The caller of a request: its bearer token checked by the gateway's authenticator,
        /// and its metadata and peer as the authenticator's handshake.
        async fn caller<T>(
            local: &__ks::LocalStreams,
            route: &str,
            request: &::tonic::Request<T>,
        ) -> ::core::result::Result<(__ks::Principal, __ks::Handshake), ::tonic::Status> {
            let headers = request.metadata().clone().into_headers();
            let headers = headers.iter().filter_map(|(k, v)| ::core::option::Option::Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())));
            let handshake = __ks::Handshake::new(__ks::Transport::Grpc, route, headers, request.remote_addr());
            let token = __ks::LocalStreams::bearer_token(metadata_text(request.metadata(), "authorization"));
            let principal = local.authenticate(token, &handshake).await.map_err(status)?;
            ::core::result::Result::Ok((principal, handshake))
        }

        fn status(s: __ks::Status) -> ::tonic::Status {
            ::tonic::Status::new(::tonic::Code::from_i32(__ks::grpc_code(s.code())), s.message().to_owned())
        }

        fn metadata_text<'a>(metadata: &'a ::tonic::metadata::MetadataMap, key: &str) -> ::core::option::Option<&'a str> {
            metadata.get(key).and_then(|v| v.to_str().ok())
        }

        #[::tonic::async_trait]
        impl super::#server_mod::#trait_name for #grpc_ty {
            #(#methods)*
        }
    })
}
