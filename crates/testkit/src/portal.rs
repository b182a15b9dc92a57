//! A visitor of the developer portal over real HTTP: keeps its cookies as a browser does, and
//! fills the CSRF field of a form from the last page it read.

use std::collections::HashMap;

/// One page as received.
#[derive(Debug, Clone)]
pub struct Page {
    pub status: u16,
    pub html: String,
    pub headers: reqwest::header::HeaderMap,
    /// Where a redirect pointed (`Location`).
    pub location: Option<String>,
}

impl Page {
    /// The value of the first `<input name="csrf" value="…">` on the page.
    pub fn csrf(&self) -> Option<String> {
        let at = self.html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
        let rest = &self.html[at..];
        Some(rest[..rest.find('"')?].to_string())
    }
}

pub struct Visitor {
    pub base: String,
    http: reqwest::Client,
    pub cookies: HashMap<String, String>,
    csrf: Option<String>,
}

impl Visitor {
    pub fn new(base: &str) -> Visitor {
        Visitor {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("a client"),
            cookies: HashMap::new(),
            csrf: None,
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&mut self, resp: reqwest::Response) -> Page {
        for v in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let text = v.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_string(), v.to_string());
                }
            }
        }
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let location = headers
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let html = resp.text().await.unwrap_or_default();
        let page = Page {
            status,
            html,
            headers,
            location,
        };
        if let Some(c) = page.csrf() {
            self.csrf = Some(c);
        }
        page
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .send()
            .await
            .expect("the portal answers");
        self.finish(resp).await
    }

    /// Posts a form with the CSRF field of the last page read (unless `fields` has one).
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let mut form: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !fields.iter().any(|(k, _)| *k == "csrf")
            && let Some(c) = &self.csrf
        {
            form.push(("csrf".into(), c.clone()));
        }
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(
                form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form.iter())
                    .finish(),
            )
            .send()
            .await
            .expect("the portal answers");
        self.finish(resp).await
    }

    /// Posts a multipart form (an image upload) with the CSRF field of the last page read.
    pub async fn upload(&mut self, path: &str, id: &str, media: &str, bytes: Vec<u8>) -> Page {
        let boundary = "gatehouse-test-boundary";
        let mut body = Vec::new();
        let mut text = |name: &str, value: &str| {
            body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes());
        };
        text("csrf", self.csrf.as_deref().unwrap_or_default());
        text("id", id);
        body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{id}\"\r\nContent-Type: {media}\r\n\r\n").as_bytes());
        body.extend_from_slice(&bytes);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, self.cookie_header())
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .expect("the portal answers");
        self.finish(resp).await
    }

    /// Signs up (and so in) with a new account.
    pub async fn sign_up(&mut self, email: &str, password: &str) -> Page {
        self.get("/signup").await;
        self.post(
            "/signup",
            &[
                ("email", email),
                ("first_name", "Ada"),
                ("last_name", "Lovelace"),
                ("password", password),
            ],
        )
        .await
    }

    pub async fn sign_in(&mut self, email: &str, password: &str) -> Page {
        self.get("/signin").await;
        self.post("/signin", &[("email", email), ("password", password)])
            .await
    }
}
