//! An instance of about 120,000 entities (1,000 APIs × 10 operations, 10,000 users, 100,000
//! subscriptions), written straight into a store, for the backup and move benchmarks.

use gatehouse_model::{Kind, ResourcePath, ServiceSettings, Sku};
use gatehouse_store::{Store, StoreError};
use serde_json::{Map, Value, json};
use std::path::Path;

pub fn settings(name: &str) -> ServiceSettings {
    ServiceSettings {
        name: name.into(),
        location: "westeurope".into(),
        sku: Sku {
            name: "Premium".into(),
            capacity: 1,
        },
        publisher_email: "ops@example.com".into(),
        publisher_name: "ops".into(),
        notification_sender_email: None,
        created_at_utc: "2026-01-01T00:00:00Z".into(),
        hostname_configurations: Vec::new(),
    }
}

pub fn populate(dir: &Path, scale: usize) {
    populate_store(&Store::open_dir(dir).unwrap(), scale);
}

/// The same instance written into `store` (either database), in one transaction.
pub fn populate_store(store: &Store, scale: usize) {
    let obj = |v: Value| -> Map<String, Value> { v.as_object().unwrap().clone() };
    store
        .write(|w| -> Result<(), StoreError> {
            w.set_service(&settings("source"))?;
            for a in 0..1_000 / scale {
                let api = format!("api{a:04}");
                w.put(&ResourcePath::top(Kind::Api, &api), obj(json!({"displayName": api, "path": api, "serviceUrl": "https://backend.example.com", "protocols": ["https"], "subscriptionRequired": true, "apiRevision": "1", "isCurrent": true})), &[])?;
                for o in 0..10 {
                    let op = ResourcePath::new(Kind::Operation, vec![("apis", api.clone()), ("operations", format!("op{o}"))]);
                    w.put(&op, obj(json!({"displayName": format!("Operation {o}"), "method": "GET", "urlTemplate": format!("/r{o}/{{id}}"), "templateParameters": [{"name": "id", "type": "string", "required": true}], "responses": [{"statusCode": 200, "representations": [{"contentType": "application/json", "examples": {"default": {"value": {"id": 1}}}}]}]})), &[])?;
                }
            }
            for u in 0..10_000 / scale {
                w.put(&ResourcePath::top(Kind::User, &format!("user{u:05}")), obj(json!({"email": format!("user{u}@example.com"), "firstName": "First", "lastName": "Last", "state": "active", "passwordHash": "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"})), &[])?;
            }
            for s in 0..100_000 / scale {
                let owner = format!("/users/user{:05}", s % (10_000 / scale));
                w.put(
                    &ResourcePath::top(Kind::Subscription, &format!("sub{s:06}")),
                    obj(json!({"scope": format!("/apis/api{:04}", s % (1_000 / scale)), "displayName": format!("Subscription {s}"), "state": "active", "ownerId": owner, "primaryKey": format!("{s:032x}"), "secondaryKey": format!("{:032x}", s + 7), "allowTracing": false, "createdDate": "2026-01-01T00:00:00Z"})),
                    &[format!("/apis/api{:04}", s % (1_000 / scale)), owner.clone()],
                )?;
            }
            Ok(())
        })
        .unwrap();
}
