//! Builds the web page in `web/` with npm and leaves it in `$OUT_DIR/web`,
//! where `src/http/assets.rs` embeds it into the binary, and lists the
//! Socket.IO Admin UI's files for `src/http/admin_ui.rs`. Runs only when the
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
        ".npmrc",
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
        if let Err(err) = copy_dir(&dist.join("admin"), &out.join("admin")) {
            fail(&format!(
                "TALLY_WEB_DIST: cannot copy admin/ from {}: {err}",
                dist.display()
            ));
        }
        embed_admin_ui(&out);
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
    embed_admin_ui(&out);
}

/// Writes `$OUT_DIR/admin_ui.rs`: the table of the Admin UI's files (path
/// under `/admin/`, content type, bytes by `include_bytes!`) that
/// `src/http/admin_ui.rs` serves. The UI's file names carry content hashes
/// that change with its releases, so the list is read from the build.
fn embed_admin_ui(out: &Path) {
    let root = out.join("admin");
    let mut files = Vec::new();
    if let Err(err) = list_files(&root, &root, &mut files) {
        fail(&format!(
            "cannot read the Admin UI in {}: {err}",
            root.display()
        ));
    }
    if !files.iter().any(|f| f == "index.html") {
        fail(&format!(
            "the web build left no admin/index.html in {}",
            out.display()
        ));
    }
    files.sort();
    let mut table = String::from("&[\n");
    for file in &files {
        let content_type = match file.rsplit('.').next().unwrap_or_default() {
            "html" => "text/html; charset=utf-8",
            "js" => "text/javascript; charset=utf-8",
            "css" => "text/css; charset=utf-8",
            "svg" => "image/svg+xml",
            "png" => "image/png",
            "woff2" => "font/woff2",
            other => fail(&format!(
                "the Admin UI has a file of unknown type .{other}: {file}"
            )),
        };
        table.push_str(&format!(
            "    ({file:?}, {content_type:?}, include_bytes!({:?})),\n",
            root.join(file)
        ));
    }
    table.push(']');
    let generated = PathBuf::from(env::var("OUT_DIR").unwrap()).join("admin_ui.rs");
    if let Err(err) = std::fs::write(&generated, table) {
        fail(&format!("cannot write {}: {err}", generated.display()));
    }
}

/// Every file under `dir`, as paths relative to `root` with `/` separators.
fn list_files(root: &Path, dir: &Path, files: &mut Vec<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            list_files(root, &path, files)?;
        } else {
            let relative = path.strip_prefix(root).expect("listed under root");
            let parts: Vec<_> = relative.iter().map(|p| p.to_string_lossy()).collect();
            files.push(parts.join("/"));
        }
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let path = entry?.path();
        let target = to.join(path.file_name().expect("a directory entry has a name"));
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target)?;
        }
    }
    Ok(())
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
