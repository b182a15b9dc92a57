// APIM's own JavaScript SDK (@azure/arm-apimanagement, api-version 2024-05-01) driven against a
// running Gatehouse instance, unchanged but for how the token is sent: over plain http on
// loopback, through a pipeline policy (the SDK's bearer policy refuses non-TLS URLs).
//
// Environment: GATEHOUSE_URL (management base URL), GATEHOUSE_TOKEN, GATEHOUSE_SERVICE (its
// name), BACKEND_URL (an HTTP backend for APIs). Prints one line per call ("ok NAME" or
// "FAIL NAME: why") and ends with "sdk: N passed, M failed"; exits non-zero on a failure.

import { ApiManagementClient } from "@azure/arm-apimanagement";

const url = process.env.GATEHOUSE_URL;
const token = process.env.GATEHOUSE_TOKEN;
const service = process.env.GATEHOUSE_SERVICE;
const backend = process.env.BACKEND_URL ?? "http://127.0.0.1:9";
// Where backups go: a folder (`file://…`), which Gatehouse's storage accepts as an account.
const storage = process.env.STORAGE_URL;
const sub = "00000000-0000-0000-0000-000000000000";
const rg = "rg";

const credential = {
  getToken: async () => ({ token, expiresOnTimestamp: Date.now() + 3600_000 }),
};
const client = new ApiManagementClient(credential, sub, {
  endpoint: url,
  allowInsecureConnection: true,
});
client.pipeline.removePolicy({ name: "bearerTokenAuthenticationPolicy" });
client.pipeline.addPolicy({
  name: "gatehouseToken",
  sendRequest: (request, next) => {
    request.headers.set("authorization", `Bearer ${token}`);
    request.allowInsecureConnection = true;
    return next(request);
  },
});

let passed = 0;
const failed = [];
async function step(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok ${name}`);
  } catch (e) {
    failed.push(name);
    const detail = e?.message ?? String(e);
    console.log(`FAIL ${name}: ${detail.split("\n")[0]}`);
  }
}
function expect(cond, what) {
  if (!cond) throw new Error(`expected ${what}`);
}
async function all(iter) {
  const out = [];
  for await (const x of iter) out.push(x);
  return out;
}
const armId = (rest) =>
  `/subscriptions/${sub}/resourceGroups/${rg}/providers/Microsoft.ApiManagement/service/${service}${rest}`;

const spec = JSON.stringify({
  openapi: "3.0.1",
  info: { title: "Pets", version: "1" },
  paths: {
    "/pets/{id}": {
      get: {
        operationId: "getPet",
        parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
        responses: { 200: { description: "ok" } },
      },
    },
  },
});

await step("service get", async () => {
  const s = await client.apiManagementService.get(rg, service);
  expect(s.name === service, `name ${service}, got ${s.name}`);
});

await step("service listByResourceGroup, list", async () => {
  const mine = await all(client.apiManagementService.listByResourceGroup(rg));
  expect(mine.length === 1 && mine[0].name === service, "this instance");
  const every = await all(client.apiManagementService.list());
  expect(every.length === 1, "this instance");
});

await step("service checkNameAvailability", async () => {
  const taken = await client.apiManagementService.checkNameAvailability({ name: service });
  expect(taken.nameAvailable === false && taken.reason === "AlreadyExists", "this name is taken");
  const free = await client.apiManagementService.checkNameAvailability({ name: "another-one" });
  expect(free.nameAvailable === true, "another name is free");
  const bad = await client.apiManagementService.checkNameAvailability({ name: "1-bad" });
  expect(bad.reason === "Invalid", "an invalid name");
});

await step("service beginCreateOrUpdateAndWait (this instance)", async () => {
  const current = await client.apiManagementService.get(rg, service);
  const s = await client.apiManagementService.beginCreateOrUpdateAndWait(rg, service, {
    location: current.location,
    sku: { name: current.sku.name, capacity: 1 },
    publisherEmail: "ops@example.com",
    publisherName: "Ops",
  });
  expect(s.publisherEmail === "ops@example.com", "updated");
  try {
    await client.apiManagementService.beginCreateOrUpdateAndWait(rg, service, {
      location: "somewhere-else",
      sku: { name: current.sku.name, capacity: 1 },
      publisherEmail: "ops@example.com",
      publisherName: "Ops",
    });
  } catch (e) {
    expect(e.statusCode === 400, `400 for another location, got ${e.statusCode}`);
    return;
  }
  throw new Error("another location was accepted");
});

await step("apiVersionSet createOrUpdate", async () => {
  await client.apiVersionSet.createOrUpdate(rg, service, "vs", {
    displayName: "Pets",
    versioningScheme: "Segment",
  });
});

await step("api beginCreateOrUpdateAndWait (OpenAPI import)", async () => {
  const api = await client.api.beginCreateOrUpdateAndWait(rg, service, "pets", {
    path: "pets",
    format: "openapi+json",
    value: spec,
    serviceUrl: backend,
    protocols: ["https", "http"],
  });
  expect(api.displayName === "Pets", `displayName Pets, got ${api.displayName}`);
});

await step("api get", async () => {
  const api = await client.api.get(rg, service, "pets");
  expect(api.path === "pets", "path pets");
});

await step("api update (If-Match *)", async () => {
  const api = await client.api.update(rg, service, "pets", "*", { description: "All pets" });
  expect(api.description === "All pets", "description updated");
});

await step("api listByService", async () => {
  const apis = await all(client.api.listByService(rg, service));
  expect(apis.some((a) => a.name === "pets"), "pets listed");
});

await step("apiOperation listByApi", async () => {
  const ops = await all(client.apiOperation.listByApi(rg, service, "pets"));
  expect(ops.some((o) => o.name === "getPet"), "getPet listed");
});

await step("apiOperation createOrUpdate", async () => {
  await client.apiOperation.createOrUpdate(rg, service, "pets", "addPet", {
    displayName: "Add a pet",
    method: "POST",
    urlTemplate: "/pets",
  });
});

await step("apiPolicy createOrUpdate", async () => {
  await client.apiPolicy.createOrUpdate(rg, service, "pets", "policy", {
    value: "<policies><inbound><base /></inbound><backend><base /></backend><outbound><base /></outbound><on-error><base /></on-error></policies>",
    format: "xml",
  });
});

await step("product createOrUpdate + productApi", async () => {
  await client.product.createOrUpdate(rg, service, "starter", {
    displayName: "Starter",
    subscriptionRequired: true,
    state: "published",
  });
  await client.productApi.createOrUpdate(rg, service, "starter", "pets");
});

await step("user createOrUpdate", async () => {
  await client.user.createOrUpdate(rg, service, "alice", {
    email: "alice@example.com",
    firstName: "Alice",
    lastName: "A",
  });
});

await step("subscription createOrUpdate + listSecrets", async () => {
  await client.subscription.createOrUpdate(rg, service, "s1", {
    displayName: "S1",
    scope: armId("/products/starter"),
    ownerId: armId("/users/alice"),
    state: "active",
  });
  const keys = await client.subscription.listSecrets(rg, service, "s1");
  expect(keys.primaryKey?.length === 32, "a 32-character primary key");
});

await step("namedValue beginCreateOrUpdateAndWait + listValue", async () => {
  await client.namedValue.beginCreateOrUpdateAndWait(rg, service, "db", {
    displayName: "db",
    value: "s3cret",
    secret: true,
  });
  const v = await client.namedValue.listValue(rg, service, "db");
  expect(v.value === "s3cret", "the secret's value");
  const got = await client.namedValue.get(rg, service, "db");
  expect(got.value === undefined, "no value in GET");
});

await step("tag createOrUpdate", async () => {
  await client.tag.createOrUpdate(rg, service, "public", { displayName: "Public" });
});

await step("policyFragment beginCreateOrUpdateAndWait", async () => {
  await client.policyFragment.beginCreateOrUpdateAndWait(rg, service, "frag", {
    value: "<fragment><base /></fragment>".replace("<base />", ""),
    format: "xml",
  });
});

// The collections clients expect (stored with APIM's shapes; the developer portal that would
// use the portal's ones is not built yet).
await step("identityProvider createOrUpdate + listSecrets", async () => {
  await client.identityProvider.createOrUpdate(rg, service, "aad", {
    clientId: "client-1",
    clientSecret: "idp-secret",
    allowedTenants: ["contoso.onmicrosoft.com"],
  });
  const got = await client.identityProvider.get(rg, service, "aad");
  expect(got.clientSecret === undefined && got.clientId === "client-1", "no secret in GET");
  const secrets = await client.identityProvider.listSecrets(rg, service, "aad");
  expect(secrets.clientSecret === "idp-secret", "the secret from listSecrets");
});

await step("authorizationServer, openIdConnectProvider + listSecrets", async () => {
  await client.authorizationServer.createOrUpdate(rg, service, "oauth", {
    displayName: "OAuth",
    clientRegistrationEndpoint: "https://login.example/register",
    authorizationEndpoint: "https://login.example/authorize",
    grantTypes: ["authorizationCode"],
    clientId: "c",
    clientSecret: "as-secret",
  });
  expect((await client.authorizationServer.listSecrets(rg, service, "oauth")).clientSecret === "as-secret", "its secret");
  await client.openIdConnectProvider.createOrUpdate(rg, service, "oidc", {
    displayName: "OIDC",
    metadataEndpoint: "https://login.example/.well-known/openid-configuration",
    clientId: "c",
    clientSecret: "oidc-secret",
  });
  expect((await client.openIdConnectProvider.listSecrets(rg, service, "oidc")).clientSecret === "oidc-secret", "its secret");
});

await step("cache, emailTemplate, signInSettings", async () => {
  await client.cache.createOrUpdate(rg, service, "default", {
    connectionString: "redis.example:6380,password=x,ssl=True",
    useFromLocation: "default",
  });
  const c = await client.cache.get(rg, service, "default");
  expect(c.connectionString === undefined, "no connection string in GET");
  await client.emailTemplate.createOrUpdate(rg, service, "newIssueNotificationMessage", {
    subject: "New issue",
    body: "<!DOCTYPE html><html><body>$IssueName</body></html>",
  });
  await client.signInSettings.createOrUpdate(rg, service, { enabled: true });
  expect((await client.signInSettings.get(rg, service)).enabled === true, "sign-in enabled");
});

await step("tenantAccess get, create + listSecrets", async () => {
  const git = await client.tenantAccess.get(rg, service, "gitAccess");
  expect(git.enabled === false, "gitAccess exists, disabled");
  await client.tenantAccess.create(rg, service, "access", "*", { enabled: true });
  const s = await client.tenantAccess.listSecrets(rg, service, "access");
  expect(s.primaryKey?.length === 32 && s.enabled === true, "keys and enabled");
});

await step("apiRelease, apiIssue, apiWiki, productWiki", async () => {
  await client.apiRelease.createOrUpdate(rg, service, "pets", "r1", { apiId: armId("/apis/pets"), notes: "first" });
  const r = await client.apiRelease.get(rg, service, "pets", "r1");
  expect(r.apiId === armId("/apis/pets"), `apiId as ARM id, got ${r.apiId}`);
  await client.apiIssue.createOrUpdate(rg, service, "pets", "i1", {
    title: "Broken",
    description: "It is broken",
    userId: armId("/users/alice"),
  });
  const issues = await all(client.issue.listByService(rg, service));
  expect(issues.some((i) => i.name === "i1"), "the issue in /issues");
  await client.apiWiki.createOrUpdate(rg, service, "pets", { documents: [{ documentationId: "doc1" }] });
  await client.productWiki.createOrUpdate(rg, service, "starter", { documents: [{ documentationId: "doc1" }] });
});

await step("apiProduct listByApis, api listByTags", async () => {
  const products = await all(client.apiProduct.listByApis(rg, service, "pets"));
  expect(products.some((p) => p.name === "starter"), "starter contains pets");
  await client.tag.assignToApi(rg, service, "pets", "public");
  const byTags = await all(client.api.listByTags(rg, service));
  expect(byTags.some((t) => t.tag?.name === "Public" && t.api?.name === "pets"), `pets by its tag: ${JSON.stringify(byTags)}`);
});

await step("user getSharedAccessToken, generateSsoUrl", async () => {
  const t = await client.user.getSharedAccessToken(rg, service, "alice", {
    keyType: "primary",
    expiry: new Date(Date.now() + 3600_000),
  });
  expect(t.value?.startsWith("alice&"), `a token for alice, got ${t.value}`);
  const sso = await client.user.generateSsoUrl(rg, service, "alice");
  expect(sso.value?.includes("token="), "an SSO URL");
});

await step("gateway createOrUpdate, gatewayApi, listKeys, generateToken", async () => {
  await client.gateway.createOrUpdate(rg, service, "edge", {
    locationData: { name: "westeurope", city: "Amsterdam" },
    description: "Edge gateway",
  });
  await client.gatewayApi.createOrUpdate(rg, service, "edge", "pets", { provisioningState: "created" });
  const apis = await all(client.gatewayApi.listByService(rg, service, "edge"));
  expect(apis.some((a) => a.name === "pets"), "pets on the gateway");
  const keys = await client.gateway.listKeys(rg, service, "edge");
  expect(keys.primary?.length === 32, "its keys");
  const token = await client.gateway.generateToken(rg, service, "edge", {
    keyType: "primary",
    expiry: new Date(Date.now() + 7 * 86400_000),
  });
  expect(token.value?.startsWith("edge&"), `APIM's token format, got ${token.value}`);
});

// Ids and references in ARM form under the ARM prefix (item 2).
await step("ids are full ARM ids", async () => {
  const api = await client.api.get(rg, service, "pets");
  expect(api.id === armId("/apis/pets"), `id ${armId("/apis/pets")}, got ${api.id}`);
  const s = await client.subscription.get(rg, service, "s1");
  expect(s.scope === armId("/products/starter"), `scope as ARM id, got ${s.scope}`);
});

await step("apiExport get (openapi+json-link, then the link)", async () => {
  const r = await client.apiExport.get(rg, service, "pets", "openapi+json-link", "true");
  expect(r.exportResultFormat === "openapi-link", `format openapi-link, got ${r.exportResultFormat}`);
  const link = r.value?.link;
  expect(typeof link === "string", "a link");
  const doc = await (await fetch(link)).json();
  expect(doc.openapi === "3.0.1" && doc.paths["/pets/{id}"], "the OpenAPI document behind the link");
});

await step("apiExport get (swagger-link, wadl-link)", async () => {
  for (const format of ["swagger-link", "wadl-link"]) {
    const r = await client.apiExport.get(rg, service, "pets", format, "true");
    const text = await (await fetch(r.value.link)).text();
    expect(text.includes(format === "wadl-link" ? "<application" : "\"swagger\":\"2.0\""), `${format}: ${text.slice(0, 80)}`);
  }
});

// Backup and restore as a stock client sends them: no `encryptionKey` (its model has none);
// the server's key is made at first use. Polling follows Retry-After, so a small backup is
// seen done within seconds, not the client's default interval.
await step("service beginBackupAndWait (no key in the request)", async () => {
  const started = Date.now();
  const s = await client.apiManagementService.beginBackupAndWait(rg, service, {
    storageAccount: storage,
    containerName: "backups",
    backupName: "sdk.ghbk",
    accessType: "AccessKey",
  });
  expect(s.name === service, `the service as the result, got ${JSON.stringify(s).slice(0, 200)}`);
  const ms = Date.now() - started;
  expect(ms < 5000, `done within 5 s, took ${ms} ms`);
});

await step("service beginRestoreAndWait", async () => {
  const s = await client.apiManagementService.beginRestoreAndWait(rg, service, {
    storageAccount: storage,
    containerName: "backups",
    backupName: "sdk.ghbk",
    accessType: "AccessKey",
  });
  expect(s.name === service, "the service as the result");
  const api = await client.api.get(rg, service, "pets");
  expect(api.path === "pets", "the API is back");
});

// Deletes (item 1).
await step("user beginDeleteAndWait", async () => {
  await client.user.beginDeleteAndWait(rg, service, "alice", "*", { deleteSubscriptions: true });
});

await step("api beginDeleteAndWait", async () => {
  await client.apiOperation.delete(rg, service, "pets", "addPet", "*");
  await client.productApi.delete(rg, service, "starter", "pets");
  await client.api.beginDeleteAndWait(rg, service, "pets", "*");
});

await step("a mistyped service name is 404", async () => {
  try {
    await client.api.listByService(rg, `${service}-typo`).next();
  } catch (e) {
    expect(e.statusCode === 404, `404, got ${e.statusCode}`);
    return;
  }
  throw new Error("expected a 404");
});

console.log(`sdk: ${passed} passed, ${failed.length} failed`);
process.exit(failed.length ? 1 : 0);
