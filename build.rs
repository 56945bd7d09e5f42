//! Builds the web page in `web/` with npm and leaves it in `$OUT_DIR/web`,
//! where `src/http/assets.rs` embeds it into the binary. Runs only when the
//! page's sources change.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the web build produces, all of it embedded.
const FILES: [&str; 5] = [
    "index.html",
    "conversation.html",
    "app.js",
    "chat.js",
    "app.css",
];

fn main() {
    let web = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("web");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("web");
    for input in [
        "src",
        "index.html",
        "conversation.html",
        "build.mjs",
        "package.json",
        "package-lock.json",
    ] {
        println!("cargo::rerun-if-changed=web/{input}");
    }
    println!("cargo::rerun-if-env-changed=TALLY_WEB_DIST");

    // Packagers that build the page in a separate step point this at the
    // finished files instead of having cargo run npm.
    if let Some(dist) = env::var_os("TALLY_WEB_DIST") {
        let dist = PathBuf::from(dist);
        std::fs::create_dir_all(&out).unwrap();
        for file in FILES {
            if let Err(err) = std::fs::copy(dist.join(file), out.join(file)) {
                fail(&format!(
                    "TALLY_WEB_DIST: cannot copy {file} from {}: {err}",
                    dist.display()
                ));
            }
        }
        return;
    }

    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    if Command::new(npm).arg("--version").output().is_err() {
        fail(
            "npm was not found. tally's web page is bundled with npm at build time: \
             install Node.js 18 or newer with npm (Debian/Ubuntu: `apt-get install nodejs npm`) \
             and build again.",
        );
    }
    if needs_install(&web) {
        run(
            Command::new(npm)
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&web),
            "npm ci",
        );
    }
    run(
        Command::new(npm)
            .args(["run", "--silent", "build"])
            .env("TALLY_WEB_OUT", &out)
            .current_dir(&web),
        "npm run build",
    );
    for file in FILES {
        if !out.join(file).is_file() {
            fail(&format!(
                "the web build did not produce {file} in {}",
                out.display()
            ));
        }
    }
}

/// `npm ci` is needed when dependencies are missing or older than the lock file.
fn needs_install(web: &Path) -> bool {
    let modified = |path: PathBuf| path.metadata().and_then(|m| m.modified()).ok();
    match (
        modified(web.join("node_modules/.package-lock.json")),
        modified(web.join("package-lock.json")),
    ) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    }
}

fn run(command: &mut Command, what: &str) {
    match command.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("`{what}` in web/ failed with {status}")),
        Err(err) => fail(&format!("could not run `{what}` in web/: {err}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    panic!("{message}");
}
