//! `alkhub plugin new`: a plugin project that builds as is.
//!
//! The templates live in `templates/plugin/` and are compiled into the
//! binary, together with the hub's own `wit/hub.wit`, so the generated
//! folder is complete and matches the hub that wrote it. Placeholders are
//! `{{name}}` and a few derived from the language and the world.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::plugins::World;

/// The languages `plugin new` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Js,
    Python,
    C,
}

impl Lang {
    /// Every language, in the order the docs list them.
    pub const ALL: [Lang; 4] = [Lang::Rust, Lang::Js, Lang::Python, Lang::C];

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
            Lang::C => "c",
        }
    }

    fn display(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Js => "JavaScript",
            Lang::Python => "Python",
            Lang::C => "C",
        }
    }
}

const WIT: &str = include_str!("../wit/hub.wit");
const README: &str = include_str!("../templates/plugin/README.md");

/// One file of a skeleton: its path in the project and its template.
struct File {
    path: &'static str,
    template: &'static str,
    executable: bool,
}

const fn file(path: &'static str, template: &'static str) -> File {
    File {
        path,
        template,
        executable: false,
    }
}

const fn script(path: &'static str, template: &'static str) -> File {
    File {
        path,
        template,
        executable: true,
    }
}

/// The files of one language and world, without the README and the WIT.
fn files(lang: Lang, world: World) -> Vec<File> {
    let remap = world == World::Remap;
    match lang {
        Lang::Rust => vec![
            file(
                "Cargo.toml",
                include_str!("../templates/plugin/rust/Cargo.toml"),
            ),
            file(
                ".cargo/config.toml",
                include_str!("../templates/plugin/rust/config.toml"),
            ),
            file(
                "src/lib.rs",
                if remap {
                    include_str!("../templates/plugin/rust/remap.rs")
                } else {
                    include_str!("../templates/plugin/rust/routing.rs")
                },
            ),
            script(
                "build.sh",
                include_str!("../templates/plugin/rust/build.sh"),
            ),
            file(
                ".gitignore",
                include_str!("../templates/plugin/rust/gitignore"),
            ),
        ],
        Lang::Js => vec![
            file(
                "package.json",
                include_str!("../templates/plugin/js/package.json"),
            ),
            file(
                "{{name}}.js",
                if remap {
                    include_str!("../templates/plugin/js/remap.js")
                } else {
                    include_str!("../templates/plugin/js/routing.js")
                },
            ),
            file(
                "policy.js",
                if remap {
                    include_str!("../templates/plugin/js/remap-policy.js")
                } else {
                    include_str!("../templates/plugin/js/routing-policy.js")
                },
            ),
            file(
                "policy.test.js",
                if remap {
                    include_str!("../templates/plugin/js/remap-policy.test.js")
                } else {
                    include_str!("../templates/plugin/js/routing-policy.test.js")
                },
            ),
            script("build.sh", include_str!("../templates/plugin/js/build.sh")),
            file(
                ".gitignore",
                include_str!("../templates/plugin/js/gitignore"),
            ),
        ],
        Lang::Python => vec![
            file(
                "app.py",
                if remap {
                    include_str!("../templates/plugin/python/remap.py")
                } else {
                    include_str!("../templates/plugin/python/routing.py")
                },
            ),
            file(
                "policy.py",
                if remap {
                    include_str!("../templates/plugin/python/remap-policy.py")
                } else {
                    include_str!("../templates/plugin/python/routing-policy.py")
                },
            ),
            file(
                "test_policy.py",
                if remap {
                    include_str!("../templates/plugin/python/remap-test_policy.py")
                } else {
                    include_str!("../templates/plugin/python/routing-test_policy.py")
                },
            ),
            script(
                "build.sh",
                include_str!("../templates/plugin/python/build.sh"),
            ),
            file(
                ".gitignore",
                include_str!("../templates/plugin/python/gitignore"),
            ),
        ],
        Lang::C => vec![
            file(
                "{{name}}.c",
                if remap {
                    include_str!("../templates/plugin/c/remap.c")
                } else {
                    include_str!("../templates/plugin/c/routing.c")
                },
            ),
            script("build.sh", include_str!("../templates/plugin/c/build.sh")),
            file(
                ".gitignore",
                include_str!("../templates/plugin/c/gitignore"),
            ),
        ],
    }
}

/// What the README says about each language.
fn readme_parts(lang: Lang) -> [(&'static str, &'static str); 2] {
    let files = match lang {
        Lang::Rust => {
            "- `src/lib.rs`: the policy.\n- `Cargo.toml`, `.cargo/config.toml`: a `cdylib` for \
             `wasm32-unknown-unknown`, linked straight into a component."
        }
        Lang::Js => {
            "- `policy.js`: the policy, without the hub's imports.\n- `policy.test.js`: its \
             tests under plain Node.js (`npm test`).\n- `{{name}}.js`: the entry point: \
             reads what the policy needs from the hub, calls it, logs an exception's text \
             to the hub before it ends the decision.\n- `package.json`: componentize-js, pinned."
        }
        Lang::Python => {
            "- `policy.py`: the policy, without the hub's imports.\n- `test_policy.py`: its \
             tests under plain CPython (`python3 -m unittest`).\n- `app.py`: the entry point: \
             reads what the policy needs from the hub, calls it, logs an exception's text to \
             the hub before it ends the decision."
        }
        Lang::C => "- `{{name}}.c`: the policy; `build.sh` generates the bindings into `gen/`.",
    };
    let requirements = match lang {
        Lang::Rust => {
            "It needs Debian's Rust toolchain for wasm (`rustc-web cargo-web rust-web-src \
             rust-web-llvm lld-22`), which `build.sh` installs when run as root; rustup's \
             toolchain works too once `rustup target add wasm32-unknown-unknown` is possible \
             (then drop `build-std` from `.cargo/config.toml`). The first build compiles the \
             standard library (about a minute); later ones take a second."
        }
        Lang::Js => {
            "It needs Node.js 20 or later; the first build installs componentize-js into \
             `node_modules/`. The component embeds a JavaScript engine (about 12 MB), so the \
             hub takes ~10 s to compile it the first time and caches the result."
        }
        Lang::Python => {
            "It needs Python 3.10 or later; the first build installs componentize-py into \
             `.venv/`. The component embeds a Python interpreter (about 18 MB), so the hub \
             takes ~10 s to compile it the first time and caches the result."
        }
        Lang::C => {
            "It needs Debian's `clang lld wasi-libc libclang-rt-dev-wasm32` (installed by \
             `build.sh` when run as root) and `wit-bindgen` 0.63 and `wasm-tools` 1.263 \
             (installed with `cargo install` when missing)."
        }
    };
    [("{{files}}", files), ("{{requirements}}", requirements)]
}

fn behaviour(world: World) -> &'static str {
    match world {
        World::Remap => "keeps every declared operation id as it is",
        World::Routing => "routes calls round robin (call n goes to candidate n % len)",
    }
}

/// Checks that `name` can name a plugin: the hub names a plugin after its
/// file, and the name also becomes a crate, package or file name.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_lowercase()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !valid {
        bail!(
            "invalid plugin name {name:?}: use 1 to 64 lowercase letters, digits and single \
             hyphens, starting with a letter (for example `my-router`)"
        );
    }
    if name == "native" {
        bail!("invalid plugin name \"native\": it is reserved for the built-in policies");
    }
    Ok(())
}

fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut text = template.to_owned();
    for (key, value) in vars {
        text = text.replace(key, value);
    }
    text
}

/// Writes a new plugin project named `name` into `dir` (which must not
/// exist or be empty) and returns the paths written, relative to `dir`.
pub fn create(dir: &Path, name: &str, lang: Lang, world: World) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name)?;
    if dir.exists() {
        let mut entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} already exists and is not empty; choose another name or --dir",
                dir.display()
            );
        }
    }
    let crate_name = name.replace('-', "_");
    let vars = [
        ("{{name}}", name),
        ("{{crate}}", crate_name.as_str()),
        ("{{world}}", world.as_str()),
        ("{{language}}", lang.display()),
        ("{{behaviour}}", behaviour(world)),
    ];
    let readme = render(README, &readme_parts(lang));

    let mut all = files(lang, world);
    all.push(file("README.md", ""));
    all.push(file("wit/hub.wit", WIT));
    let mut written = Vec::new();
    for f in all {
        let relative = PathBuf::from(render(f.path, &vars));
        let text = match f.path {
            "README.md" => render(&readme, &vars),
            "wit/hub.wit" => f.template.to_owned(),
            _ => render(f.template, &vars),
        };
        let path = dir.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        if f.executable {
            set_executable(&path)?;
        }
        written.push(relative);
    }
    Ok(written)
}

#[cfg(unix)]
fn set_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(not(unix))]
fn set_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "my-router", "r2d2", "x-1-y"] {
            check_name(good).unwrap();
        }
        for bad in ["", "My", "1st", "a_b", "a--b", "a-", "native", "a.b", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_skeleton_has_no_placeholder_left() {
        let root = std::env::temp_dir().join(format!("alkhub-scaffold-{}", std::process::id()));
        for lang in Lang::ALL {
            for world in [World::Remap, World::Routing] {
                let dir = root.join(format!("{}-{}", lang.as_str(), world.as_str()));
                let written = create(&dir, "my-plugin", lang, world).unwrap();
                assert!(written.iter().any(|p| p.ends_with("build.sh")));
                for path in written {
                    let text = std::fs::read_to_string(dir.join(&path)).unwrap();
                    assert!(
                        !text.contains("{{"),
                        "{} keeps a placeholder",
                        path.display()
                    );
                }
                let err = create(&dir, "my-plugin", lang, world).unwrap_err();
                assert!(err.to_string().contains("not empty"), "{err}");
            }
        }
        std::fs::remove_dir_all(root).unwrap();
    }
}
