//! The HTML page listing a directory that has no `index.html`. Every name
//! is HTML-escaped in text and percent-encoded in its link.

use super::path::encode_segment;
use crate::proxy::error_page::html_escape;

/// One directory entry: raw file name bytes, and whether it is a directory.
pub struct Entry {
    pub name: Vec<u8>,
    pub is_dir: bool,
}

/// Renders the listing of `title` (the decoded request path); `at_root`
/// leaves out the parent link. Entries are sorted here: directories first,
/// then by name.
pub fn render(title: &str, mut entries: Vec<Entry>, at_root: bool) -> String {
    entries.sort_by(|a, b| b.is_dir.cmp(&a.is_dir).then_with(|| a.name.cmp(&b.name)));
    let title = html_escape(title);
    let mut out = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of {title}</title></head>\n\
         <body><h1>Index of {title}</h1>\n<ul>\n"
    );
    if !at_root {
        out.push_str("<li><a href=\"../\">../</a></li>\n");
    }
    for e in &entries {
        let slash = if e.is_dir { "/" } else { "" };
        out.push_str(&format!(
            "<li><a href=\"./{href}{slash}\">{text}{slash}</a></li>\n",
            href = encode_segment(&e.name),
            text = html_escape(&String::from_utf8_lossy(&e.name)),
        ));
    }
    out.push_str("</ul></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_escaped_and_sorted() {
        let page = render(
            "/a<b>/",
            vec![
                Entry {
                    name: b"z.txt".to_vec(),
                    is_dir: false,
                },
                Entry {
                    name: b"<script>x".to_vec(),
                    is_dir: false,
                },
                Entry {
                    name: b"sub dir".to_vec(),
                    is_dir: true,
                },
            ],
            false,
        );
        assert!(page.contains("Index of /a&lt;b&gt;/"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("href=\"./%3Cscript%3Ex\">&lt;script&gt;x</a>"));
        let dir = page.find("sub dir/").expect("dir");
        let file = page.find("z.txt").expect("file");
        assert!(dir < file, "directories first");
        assert!(page.contains("href=\"../\""));
        assert!(!render("/", Vec::new(), true).contains("../"));
    }
}
