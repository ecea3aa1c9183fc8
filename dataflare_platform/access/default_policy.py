"""The shipped default policy, identical to ``deployments/local/policy.cedar`` (a test
holds them together): it is in the package so an installed platform without the
repository's ``deployments/`` still starts on a known policy."""

DEFAULT_POLICY = """\
// DataFlare Platform authorization policy (Cedar), the embedded default.
// Deny by default: an action is allowed only when a rule below permits it and none forbids
// it. Point DATAFLARE_POLICY at your own copy to change it; the policy is validated at
// load (schema: dataflare_platform/access/cedar_schema.py) and its version (a hash of this
// text) is written with every decision in the audit log. See docs/security.md.

// Roles: each role may do what the roles below it may (viewer < launcher < editor < admin).
// The action group Dataflare::Action::"role/<role>" holds exactly that role's actions.
@id("role viewer")
permit (
  principal in Dataflare::Role::"viewer",
  action in Dataflare::Action::"role/viewer",
  resource
);

@id("role launcher")
permit (
  principal in Dataflare::Role::"launcher",
  action in Dataflare::Action::"role/launcher",
  resource
);

@id("role editor")
permit (
  principal in Dataflare::Role::"editor",
  action in Dataflare::Action::"role/editor",
  resource
);

@id("role admin")
permit (
  principal in Dataflare::Role::"admin",
  action in Dataflare::Action::"role/admin",
  resource
);

// Sensors and schedules launch runs of jobs in their own code location only (the daemon
// evaluates them; the run coordinator makes their principal from the daemon's context).
@id("automation launches in its own location")
permit (principal, action == Dataflare::Action::"launch", resource)
when {
  (principal.kind == "sensor" || principal.kind == "schedule") &&
  principal.via == "daemon" &&
  principal has location && resource has location &&
  principal.location == resource.location
};

// Run retries and declarative automation, submitted by the daemon. A backfill's runs are
// not the daemon's: each is decided as the user or service that requested the backfill at
// the front (the requester's principal with `backfill` set, its roles as they are now), so
// the rules above apply to them as to that principal's own launches. A backfill with no
// requester recorded by the front (`dagster job backfill`, a plain `dagster dev`) runs as
// `backfill:<id>` via "daemon" and no rule here permits it; to allow such backfills, add
// `permit (principal, action == Dataflare::Action::"launch", resource)
//  when { principal.kind == "backfill" };`
@id("daemon retries and automation")
permit (principal, action == Dataflare::Action::"launch", resource)
when { principal.via == "daemon" && principal.kind == "system" };

// In-process paths on the host (`dagster job execute`, `materialize()` in scripts and
// tests): not gateable, allowed and recorded as out of band (principal system:host,
// via "host"). A
// webserver started without the platform's front (plain `dagster dev` or
// dagster-webserver, principal system:webserver) is NOT allowed: anyone reaching its port
// could launch; start the UI with `dataflare ui`. Remove this rule to refuse host
// launches too where the coordinator sees them.
@id("host out of band")
permit (principal, action == Dataflare::Action::"launch", resource)
when { principal.via == "host" && principal.name != "webserver" };

// The plugin marketplace (issue 20 §2): publisher, reviewer, operator and the scanner
// service are roles of their own, in no other role (an admin does not approve, publish
// or scan). Each lifecycle step of a release (marketplace/lifecycle.py) is one action on
// a resource of kind "plugin" carrying its namespace. A publisher is assigned per
// namespace (`publisher@<namespace>` in its role assignment, `principal.namespaces`).
@id("publisher in its own namespaces")
permit (
  principal in Dataflare::Role::"publisher",
  action in Dataflare::Action::"role/publisher",
  resource
)
when {
  resource.kind == "plugin" &&
  resource has namespace &&
  principal.namespaces.contains(resource.namespace)
};

@id("plugin reviewer")
permit (
  principal in Dataflare::Role::"reviewer",
  action in Dataflare::Action::"role/reviewer",
  resource
)
when { resource.kind == "plugin" };

@id("plugin operator")
permit (
  principal in Dataflare::Role::"operator",
  action in Dataflare::Action::"role/operator",
  resource
)
when { resource.kind == "plugin" };

// The scanner is a service (the plugin_admission job's principal), never a person.
@id("plugin scanner service")
permit (
  principal in Dataflare::Role::"scanner",
  action in Dataflare::Action::"role/scanner",
  resource
)
when { resource.kind == "plugin" && principal.kind == "service" };

// decrypt is in no role: grant it only by naming it and a classification, e.g.
// @id("auditors read pii")
// permit (
//   principal in Dataflare::Team::"auditors",
//   action == Dataflare::Action::"decrypt",
//   resource
// )
// when { resource has classification && resource.classification == "pii" };
"""
