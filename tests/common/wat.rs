//! Hand-written components for tests and benchmarks: a WAT core module
//! encoded as a component of one of the hub's worlds.

/// A memory with a bump allocator behind `cabi_realloc`, for a module's
/// definitions; an export's `cabi_post_*` resets it with
/// `(global.set $heap (i32.const 1024))`.
pub const BUMP_ALLOCATOR: &str = r#"
          (memory (export "memory") 1)
          (global $heap (mut i32) (i32.const 1024))
          (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
            (local $ret i32)
            (local.set $ret (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                                     (i32.sub (i32.const 0) (local.get 2))))
            (global.set $heap (i32.add (local.get $ret) (local.get 3)))
            (local.get $ret))"#;

/// Encodes the core module `wat` as a component of `world` of `package`.
pub fn componentize(
    wat: &str,
    resolve: &wit_parser::Resolve,
    package: wit_parser::PackageId,
    world: &str,
) -> Vec<u8> {
    let mut module = wat::parse_str(wat).unwrap();
    let world = resolve.select_world(&[package], Some(world)).unwrap();
    wit_component::embed_component_metadata(
        &mut module,
        resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&module)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

/// `component` with a custom section `name` holding `payload` appended (as
/// a build records what it was built from, in `alkhub:source`).
pub fn with_custom_section(component: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    leb128(&mut body, name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0);
    leb128(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}
