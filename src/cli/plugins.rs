//! `alkhub plugin`: check, try and start WebAssembly plugins.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};

use alkhub::plugins::World;
use alkhub::scaffold::Lang;

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Say which world a component implements and what it imports, or exactly what is wrong.
    Check {
        /// The component file.
        file: PathBuf,
    },
    /// Make one decision with a component, without a hub: print the decision, what the plugin logged and the time taken.
    Run {
        /// The component file.
        file: PathBuf,
        /// The call (routing) or declaration (remap) as a JSON file, `-` for
        /// standard input; see docs/plugins/authoring.md. Default: `{}`.
        #[arg(long, conflicts_with = "json")]
        input: Option<PathBuf>,
        /// The same, inline.
        #[arg(long)]
        json: Option<String>,
        /// Warm decisions to time after the first.
        #[arg(long, default_value_t = 1000)]
        repeat: u32,
    },
    /// Write a plugin project that builds as is (source, build script, WIT, README).
    New {
        /// The plugin's name: lowercase letters, digits and hyphens.
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: LangArg,
        /// The policy it implements.
        #[arg(long, value_enum)]
        world: WorldArg,
        /// Where to write it (default: a new folder named after the plugin).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LangArg {
    Rust,
    Js,
    Python,
    C,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum WorldArg {
    Remap,
    Routing,
}

/// `alkhub plugin …`.
pub async fn plugin(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Check { file } => {
            // The operator's own tool: unlike `GET /v1/plugins`, it shows the whole path.
            let path = std::path::absolute(&file).unwrap_or_else(|_| file.clone());
            let report =
                tokio::task::spawn_blocking(move || alkhub::plugins::check_file(&file)).await??;
            println!("file: {}", path.display());
            println!(
                "world: {}",
                serde_json::to_value(report.world)?
                    .as_str()
                    .unwrap_or_default()
            );
            println!("wit: alkdev:hub@{}", report.wit_version);
            println!("size: {} bytes", report.size);
            println!("imports:");
            for i in &report.imports {
                println!("  {i}");
            }
            println!("exports:");
            for e in &report.exports {
                println!("  {e}");
            }
        }
        PluginCommand::Run {
            file,
            input,
            json,
            repeat,
        } => {
            let text = match (input, json) {
                (_, Some(text)) => text,
                (Some(path), None) if path.as_os_str() == "-" => {
                    std::io::read_to_string(std::io::stdin())
                        .context("cannot read standard input")?
                }
                (Some(path), None) => std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?,
                (None, None) => "{}".to_owned(),
            };
            let input: alkhub::plugins::TrialInput =
                serde_json::from_str(&text).context("invalid input")?;
            let trial = tokio::task::spawn_blocking(move || {
                alkhub::plugins::run_file(&file, &input, repeat)
            })
            .await??;
            println!("world: {}", trial.world.as_str());
            println!("wit: alkdev:hub@{}", trial.wit_version);
            println!("compile: {:.1} ms", trial.compile.as_secs_f64() * 1e3);
            match &trial.decision {
                Ok(decision) => println!("decision: {decision}"),
                Err(reason) => println!("failed: {reason}"),
            }
            println!(
                "first decision: {:.1} µs (new instance)",
                trial.first.as_secs_f64() * 1e6
            );
            if let Some(warm) = trial.warm {
                println!(
                    "warm decision: {:.2} µs (mean of {repeat})",
                    warm.as_secs_f64() * 1e6
                );
            }
            println!("log:");
            for line in &trial.log {
                println!("  {line}");
            }
            if trial.decision.is_err() {
                std::process::exit(1);
            }
        }
        PluginCommand::New {
            name,
            lang,
            world,
            dir,
        } => {
            let lang = match lang {
                LangArg::Rust => Lang::Rust,
                LangArg::Js => Lang::Js,
                LangArg::Python => Lang::Python,
                LangArg::C => Lang::C,
            };
            let world = match world {
                WorldArg::Remap => World::Remap,
                WorldArg::Routing => World::Routing,
            };
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let written = alkhub::scaffold::create(&dir, &name, lang, world)?;
            println!(
                "wrote {} {} plugin {name} in {}:",
                lang.as_str(),
                world.as_str(),
                dir.display()
            );
            for path in written {
                println!("  {}", path.display());
            }
            println!("build it with: bash {}", dir.join("build.sh").display());
        }
    }
    Ok(())
}
