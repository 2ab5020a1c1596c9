#!/usr/bin/env python3
"""Generate the OpenAPI v3 documents served by berth's Kubernetes API server.

PROVENANCE
    Source package : kubernetes-validate 1.37.0 (PyPI)
    Source file    : kubernetes_validate/kubernetes-json-schema/v1.32.0-local/_definitions.json
    Kubernetes     : v1.32.0 (the official Kubernetes OpenAPI definitions, as
                     converted to JSON Schema by kubernetes-validate)

    Every schema under components.schemas is DERIVED from that file by the
    mechanical transformations in `convert_schema` below; none is written by
    hand.  The paths/operations are built from the RESOURCES table below,
    following the shape kube-apiserver 1.32 serves at /openapi/v3/<gv>.

    The files in host/src/api/openapi/ are generated output: DO NOT EDIT THEM
    BY HAND.  Change this script and rerun it instead.

USAGE
    python3 -m venv /tmp/kv && /tmp/kv/bin/pip install kubernetes-validate==1.37.0
    /tmp/kv/bin/python host/openapi/generate.py          # from the repo root

    (Only the Python standard library is used; the kubernetes-validate package
    is looked up solely to find its bundled schema files.)  The output is
    deterministic: JSON with sorted keys and compact separators, gzip with
    mtime=0, so reruns give byte-identical files.

REVERSED CONVERSIONS (JSON Schema -> OpenAPI 3.0 as kube-apiserver serves it)
    kubernetes-validate turned the Kubernetes OpenAPI into JSON Schema.  We undo
    exactly what that conversion did:
      * "$ref": "#/$defs/X"          -> "#/components/schemas/X"
      * "type": ["T", "null"]         -> "type": "T"
      * "enum" on apiVersion / kind   -> dropped (synthesised from
                                         x-kubernetes-group-version-kind; checked)
      * IntOrString oneOf[string,integer] -> {"type":"string","format":"int-or-string"}
      * Quantity    oneOf[string,number]  -> {"type":"string"}
      * a $ref with sibling keys (description, x-kubernetes-*) is wrapped as
        {"allOf":[{"$ref":...}], <siblings>} as kube-apiserver's v3 docs do.
    Not recoverable from the source (absent from these docs): the
    descriptions of IntOrString and Quantity, v3-only "default" values (but
    those server-side apply needs, in V3_DEFAULTS) and v3-only "enum" lists
    of enum-typed string fields.
"""

import copy
import gzip
import importlib.metadata
import importlib.util
import json
import os
import sys

KV_PACKAGE = "kubernetes-validate"
KV_EXPECTED_VERSION = "1.37.0"
K8S_SCHEMA_DIR = "v1.32.0-local"
K8S_VERSION = "v1.32.0"

HERE = os.path.dirname(os.path.abspath(__file__))
OUT_DIR = os.path.normpath(os.path.join(HERE, "..", "src", "api", "openapi"))

SCHEMA_PREFIX = "#/components/schemas/"
META = "io.k8s.apimachinery.pkg.apis.meta.v1."
STATUS = META + "Status"
DELETE_OPTIONS = META + "DeleteOptions"
PATCH = META + "Patch"
WATCH_EVENT = META + "WatchEvent"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"

# --------------------------------------------------------------------------
# What berth serves.
#
# verbs: "full"     = list, create, deletecollection, get, replace, patch, delete
#        "nocoll"   = as full, without deletecollection (namespaces)
#        "readonly" = list, get
#        "create"   = create only (review-style resources)
#        "createget" = list, create, get, delete (a version served as a view)
# delete_returns_object: kube-apiserver 1.32 documents the deleted object
#        (not Status) as the DELETE response for these kinds.
# --------------------------------------------------------------------------
RESOURCES = {
    ("", "v1"): [
        dict(plural="pods", kind="Pod", schema="io.k8s.api.core.v1.Pod",
             namespaced=True, verbs="full", delete_returns_object=True,
             subresources=["status", "log", "exec", "attach", "portforward"]),
        dict(plural="services", kind="Service", schema="io.k8s.api.core.v1.Service",
             namespaced=True, verbs="full", delete_returns_object=True),
        dict(plural="configmaps", kind="ConfigMap", schema="io.k8s.api.core.v1.ConfigMap",
             namespaced=True, verbs="full"),
        dict(plural="secrets", kind="Secret", schema="io.k8s.api.core.v1.Secret",
             namespaced=True, verbs="full"),
        dict(plural="events", kind="Event", schema="io.k8s.api.core.v1.Event",
             namespaced=True, verbs="full"),
        dict(plural="endpoints", kind="Endpoints", schema="io.k8s.api.core.v1.Endpoints",
             namespaced=True, verbs="full"),
        dict(plural="serviceaccounts", kind="ServiceAccount",
             schema="io.k8s.api.core.v1.ServiceAccount",
             namespaced=True, verbs="readonly"),
        dict(plural="namespaces", kind="Namespace", schema="io.k8s.api.core.v1.Namespace",
             namespaced=False, verbs="nocoll"),
        dict(plural="nodes", kind="Node", schema="io.k8s.api.core.v1.Node",
             namespaced=False, verbs="readonly"),
        dict(plural="persistentvolumeclaims", kind="PersistentVolumeClaim",
             schema="io.k8s.api.core.v1.PersistentVolumeClaim",
             namespaced=True, verbs="full", subresources=["status"]),
        dict(plural="persistentvolumes", kind="PersistentVolume",
             schema="io.k8s.api.core.v1.PersistentVolume",
             namespaced=False, verbs="full", subresources=["status"]),
    ],
    ("apps", "v1"): [
        dict(plural="deployments", kind="Deployment", schema="io.k8s.api.apps.v1.Deployment",
             namespaced=True, verbs="full", subresources=["status", "scale"]),
        dict(plural="replicasets", kind="ReplicaSet", schema="io.k8s.api.apps.v1.ReplicaSet",
             namespaced=True, verbs="full", subresources=["status", "scale"]),
        dict(plural="statefulsets", kind="StatefulSet", schema="io.k8s.api.apps.v1.StatefulSet",
             namespaced=True, verbs="full", subresources=["status", "scale"]),
    ],
    ("batch", "v1"): [
        dict(plural="jobs", kind="Job", schema="io.k8s.api.batch.v1.Job",
             namespaced=True, verbs="full", subresources=["status"]),
        dict(plural="cronjobs", kind="CronJob", schema="io.k8s.api.batch.v1.CronJob",
             namespaced=True, verbs="full", subresources=["status"]),
    ],
    ("networking.k8s.io", "v1"): [
        dict(plural="ingresses", kind="Ingress", schema="io.k8s.api.networking.v1.Ingress",
             namespaced=True, verbs="full", subresources=["status"]),
        dict(plural="networkpolicies", kind="NetworkPolicy",
             schema="io.k8s.api.networking.v1.NetworkPolicy",
             namespaced=True, verbs="full"),
        dict(plural="ingressclasses", kind="IngressClass",
             schema="io.k8s.api.networking.v1.IngressClass",
             namespaced=False, verbs="readonly"),
    ],
    ("storage.k8s.io", "v1"): [
        dict(plural="storageclasses", kind="StorageClass",
             schema="io.k8s.api.storage.v1.StorageClass",
             namespaced=False, verbs="readonly"),
    ],
    ("events.k8s.io", "v1"): [
        dict(plural="events", kind="Event", schema="io.k8s.api.events.v1.Event",
             namespaced=True, verbs="full"),
    ],
    ("discovery.k8s.io", "v1"): [
        dict(plural="endpointslices", kind="EndpointSlice",
             schema="io.k8s.api.discovery.v1.EndpointSlice",
             namespaced=True, verbs="readonly"),
    ],
    ("node.k8s.io", "v1"): [
        dict(plural="runtimeclasses", kind="RuntimeClass",
             schema="io.k8s.api.node.v1.RuntimeClass",
             namespaced=False, verbs="readonly"),
    ],
    ("authorization.k8s.io", "v1"): [
        dict(plural="selfsubjectaccessreviews", kind="SelfSubjectAccessReview",
             schema="io.k8s.api.authorization.v1.SelfSubjectAccessReview",
             namespaced=False, verbs="create"),
        dict(plural="selfsubjectrulesreviews", kind="SelfSubjectRulesReview",
             schema="io.k8s.api.authorization.v1.SelfSubjectRulesReview",
             namespaced=False, verbs="create"),
    ],
    ("autoscaling", "v2"): [
        dict(plural="horizontalpodautoscalers", kind="HorizontalPodAutoscaler",
             schema="io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
             namespaced=True, verbs="full", subresources=["status"]),
    ],
    # Only the Scale schema (used by the apps/v1 */scale subresources) lives
    # here; berth serves no autoscaling/v1 resource, so the document has an
    # empty "paths" object.
    ("autoscaling", "v1"): [
        dict(plural="horizontalpodautoscalers", kind="HorizontalPodAutoscaler",
             schema="io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler",
             namespaced=True, verbs="createget"),
    ],
}

# Schemas a group-version document carries even when no path references them.
EXTRA_ROOTS = {
    ("autoscaling", "v1"): ["io.k8s.api.autoscaling.v1.Scale"],
}

SCALE_SCHEMA = "io.k8s.api.autoscaling.v1.Scale"
SCALE_GVK = {"group": "autoscaling", "version": "v1", "kind": "Scale"}

# --------------------------------------------------------------------------
# Source loading and schema conversion
# --------------------------------------------------------------------------


def load_definitions():
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("generate.py: the %s package is not installed in this Python; see the "
                 "USAGE section at the top of this file" % KV_PACKAGE)
    version = importlib.metadata.version(KV_PACKAGE)
    if version != KV_EXPECTED_VERSION and not os.environ.get("KV_ALLOW_ANY_VERSION"):
        sys.exit("generate.py: found %s %s, expected %s (update the provenance header and "
                 "KV_EXPECTED_VERSION, or set KV_ALLOW_ANY_VERSION=1)"
                 % (KV_PACKAGE, version, KV_EXPECTED_VERSION))
    pkg_dir = list(spec.submodule_search_locations)[0]
    path = os.path.join(pkg_dir, "kubernetes-json-schema", K8S_SCHEMA_DIR, "_definitions.json")
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    return doc["$defs"]


def strip_null_type(t):
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        if len(rest) != 1:
            raise ValueError("unexpected type list %r" % (t,))
        return rest[0]
    return t


def convert_ref(ref):
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError("unexpected $ref %r" % ref)
    return SCHEMA_PREFIX + ref[len(prefix):]


def gvk_enum_values(gvks, prop):
    if prop == "apiVersion":
        return sorted({(g["group"] + "/" if g["group"] else "") + g["version"] for g in gvks})
    return sorted({g["kind"] for g in gvks})


def convert_schema(s, gvks=None):
    """Convert one JSON-Schema node of kubernetes-validate into OpenAPI 3.0."""
    if isinstance(s, list):
        return [convert_schema(x) for x in s]
    if not isinstance(s, dict):
        return copy.deepcopy(s)
    out = {}
    for k, v in s.items():
        if k == "type":
            out[k] = strip_null_type(v)
        elif k == "$ref":
            out[k] = convert_ref(v)
        elif k == "properties":
            props = {}
            for pname, pschema in v.items():
                pschema = dict(pschema)
                if pname in ("apiVersion", "kind") and "enum" in pschema:
                    # Synthesised by the JSON-Schema conversion; verify, then drop.
                    if not gvks or sorted(pschema["enum"]) != gvk_enum_values(gvks, pname):
                        raise ValueError("unexpected enum on %s" % pname)
                    del pschema["enum"]
                props[pname] = convert_schema(pschema)
            out[k] = props
        elif k in ("items", "additionalProperties", "not") and isinstance(v, dict):
            out[k] = convert_schema(v)
        elif k in ("allOf", "oneOf", "anyOf"):
            out[k] = [convert_schema(x) for x in v]
        elif k == "enum":
            raise ValueError("unexpected enum outside apiVersion/kind")
        else:
            out[k] = copy.deepcopy(v)
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}]
    return out


# v3-only defaults kube-apiserver's documents carry that server-side apply
# needs: a list-map key field left out of an applied configuration takes its
# default, so `ports: [{containerPort: 80}]` is the same element as the
# stored `{containerPort: 80, protocol: TCP}` (without it, each apply adds a
# port).
V3_DEFAULTS = {
    ("io.k8s.api.core.v1.ContainerPort", "protocol"): "TCP",
    ("io.k8s.api.core.v1.ServicePort", "protocol"): "TCP",
}


def with_v3_defaults(name, schema):
    for (definition, prop), value in V3_DEFAULTS.items():
        if definition == name:
            schema["properties"][prop]["default"] = value
    return schema


def convert_definition(name, s):
    if name == INT_OR_STRING:
        assert [strip_null_type(x["type"]) for x in s["oneOf"]] == ["string", "integer"], s
        return {"format": "int-or-string", "type": "string"}
    if name == QUANTITY:
        assert [strip_null_type(x["type"]) for x in s["oneOf"]] == ["string", "number"], s
        return {"type": "string"}
    return with_v3_defaults(name, convert_schema(s, s.get("x-kubernetes-group-version-kind")))


def collect_refs(node, acc):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                if not v.startswith(SCHEMA_PREFIX):
                    raise ValueError("unexpected $ref %r" % v)
                acc.add(v[len(SCHEMA_PREFIX):])
            else:
                collect_refs(v, acc)
    elif isinstance(node, list):
        for v in node:
            collect_refs(v, acc)


def reachable(defs, roots):
    seen = set()
    todo = sorted(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in defs:
            raise KeyError("definition %s not in source" % name)
        seen.add(name)
        refs = set()
        collect_refs(defs[name], refs)
        todo.extend(sorted(refs - seen))
    return seen


# --------------------------------------------------------------------------
# Parameters (as kube-apiserver 1.32 documents them)
# --------------------------------------------------------------------------


def qparam(name, typ, description):
    p = {"in": "query", "name": name, "schema": {"type": typ, "uniqueItems": True}}
    if description:
        p["description"] = description
    return p


def path_param(name, description):
    return {"description": description, "in": "path", "name": name, "required": True,
            "schema": {"type": "string", "uniqueItems": True}}


P_PRETTY = qparam("pretty", "string",
                  "If 'true', then the output is pretty printed. Defaults to 'false' unless the "
                  "user-agent indicates a browser or command-line HTTP tool (curl and wget).")
P_NAMESPACE = path_param("namespace", "object name and auth scope, such as for teams and projects")

P_FIELD_MANAGER = qparam(
    "fieldManager", "string",
    "fieldManager is a name associated with the actor or entity that is making these changes. "
    "The value must be less than or 128 characters long, and only contain printable "
    "characters, as defined by https://golang.org/pkg/unicode/#IsPrint.")
P_FIELD_MANAGER_PATCH = qparam(
    "fieldManager", "string",
    "fieldManager is a name associated with the actor or entity that is making these changes. "
    "The value must be less than or 128 characters long, and only contain printable "
    "characters, as defined by https://golang.org/pkg/unicode/#IsPrint. This field is required "
    "for apply requests (application/apply-patch) but optional for non-apply patch types "
    "(JsonPatch, MergePatch, StrategicMergePatch).")
P_FIELD_VALIDATION = qparam(
    "fieldValidation", "string",
    "fieldValidation instructs the server on how to handle objects in the request "
    "(POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This "
    "will ignore any unknown fields that are silently dropped from the object, and will ignore "
    "all but the last duplicate field that the decoder encounters. This is the default behavior "
    "prior to v1.23. - Warn: This will send a warning via the standard warning response header "
    "for each unknown field that is dropped from the object, and for each duplicate field that "
    "is encountered. The request will still succeed if there are no other errors, and will only "
    "persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This "
    "will fail the request with a BadRequest error if any unknown fields would be dropped from "
    "the object, or if any duplicate fields are present. The error returned from the server "
    "will contain all unknown and duplicate fields encountered.")
P_FORCE = qparam(
    "force", "boolean",
    "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting "
    "fields owned by other people. Force flag must be unset for non-apply patch requests.")

LIST_PARAMS = [
    qparam("allowWatchBookmarks", "boolean",
           "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do "
           "not implement bookmarks may ignore this flag and bookmarks are sent at the server's "
           "discretion. Clients should not assume bookmarks are returned at any specific "
           "interval, nor may they assume the server will send any BOOKMARK event during a "
           "session. If this is not a watch, this field is ignored."),
    qparam("continue", "string",
           "The continue option should be set when retrieving more results from the server. "
           "Since this value is server defined, clients may only use the continue value from a "
           "previous query result with identical query parameters (except for the value of "
           "continue) and the server may reject a continue value it does not recognize. If the "
           "specified continue value is no longer valid whether due to expiration (generally "
           "five to fifteen minutes) or a configuration change on the server, the server will "
           "respond with a 410 ResourceExpired error together with a continue token. If the "
           "client needs a consistent list, it must restart their list without the continue "
           "field. Otherwise, the client may send another list request with the token received "
           "with the 410 error, the server will respond with a list starting from the next key, "
           "but from the latest snapshot, which is inconsistent from the previous list results "
           "- objects that are created, modified, or deleted after the first list request will "
           "be included in the response, as long as their keys are after the \"next key\".\n\n"
           "This field is not supported when watch is true. Clients may start a watch from the "
           "last resourceVersion value returned by the server and not miss any modifications."),
    qparam("fieldSelector", "string",
           "A selector to restrict the list of returned objects by their fields. Defaults to "
           "everything."),
    qparam("labelSelector", "string",
           "A selector to restrict the list of returned objects by their labels. Defaults to "
           "everything."),
    qparam("limit", "integer",
           "limit is a maximum number of responses to return for a list call. If more items "
           "exist, the server will set the `continue` field on the list metadata to a value that "
           "can be used with the same initial query to retrieve the next set of results. Setting "
           "a limit may return fewer than the requested amount of items (up to zero items) in "
           "the event all requested objects are filtered out and clients should only use the "
           "presence of the continue field to determine whether more results are available. "
           "Servers may choose not to support the limit argument and will return all of the "
           "available results. If limit is specified and the continue field is empty, clients "
           "may assume that no more results are available. This field is not supported if watch "
           "is true.\n\nThe server guarantees that the objects returned when using continue will "
           "be identical to issuing a single list call without a limit - that is, no objects "
           "created, modified, or deleted after the first request is issued will be included in "
           "any subsequent continued requests. This is sometimes referred to as a consistent "
           "snapshot, and ensures that a client that is using limit to receive smaller chunks of "
           "a very large result can ensure they see all possible objects. If objects are updated "
           "during a chunked list the version of the object that was present at the time the "
           "first list result was calculated is returned."),
    qparam("resourceVersion", "string",
           "resourceVersion sets a constraint on what resource versions a request may be served "
           "from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-"
           "versions for details.\n\nDefaults to unset"),
    qparam("resourceVersionMatch", "string",
           "resourceVersionMatch determines how resourceVersion is applied to list calls. It is "
           "highly recommended that resourceVersionMatch be set for list calls where "
           "resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-"
           "concepts/#resource-versions for details.\n\nDefaults to unset"),
    qparam("sendInitialEvents", "boolean",
           "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the "
           "watch stream will begin with synthetic events to produce the current state of "
           "objects in the collection. Once all such events have been sent, a synthetic "
           "\"Bookmark\" event  will be sent. The bookmark will report the ResourceVersion (RV) "
           "corresponding to the set of objects, and be marked with "
           "`\"k8s.io/initial-events-end\": \"true\"` annotation. Afterwards, the watch stream "
           "will proceed as usual, sending watch events corresponding to changes (subsequent to "
           "the RV) to objects watched.\n\nWhen `sendInitialEvents` option is set, we require "
           "`resourceVersionMatch` option to also be set. The semantic of the watch request is "
           "as following: - `resourceVersionMatch` = NotOlderThan\n  is interpreted as \"data "
           "at least as new as the provided `resourceVersion`\"\n  and the bookmark event is "
           "send when the state is synced\n  to a `resourceVersion` at least as fresh as the one "
           "provided by the ListOptions.\n  If `resourceVersion` is unset, this is interpreted "
           "as \"consistent read\" and the\n  bookmark event is send when the state is synced "
           "at least to the moment\n  when request started being processed.\n- "
           "`resourceVersionMatch` set to any other value or unset\n  Invalid error is "
           "returned.\n\nDefaults to true if `resourceVersion=\"\"` or `resourceVersion=\"0\"` "
           "(for backward compatibility reasons) and to false otherwise."),
    qparam("timeoutSeconds", "integer",
           "Timeout for the list/watch call. This limits the duration of the call, regardless of "
           "any activity or inactivity."),
    qparam("watch", "boolean",
           "Watch for changes to the described resources and return them as a stream of add, "
           "update, and remove notifications. Specify resourceVersion."),
]


def delete_params(defs):
    """DELETE query parameters, derived from the DeleteOptions definition."""
    props = defs[DELETE_OPTIONS]["properties"]
    out = []
    for name in ("dryRun", "gracePeriodSeconds",
                 "ignoreStoreReadErrorWithClusterBreakingPotential",
                 "orphanDependents", "propagationPolicy"):
        p = props[name]
        typ = p["type"]
        if typ == "array":  # dryRun is a repeated string query parameter
            typ = p["items"]["type"]
        out.append(qparam(name, typ, p.get("description")))
    return out


def dry_run_param(defs):
    return [p for p in delete_params(defs) if p["name"] == "dryRun"][0]


# --------------------------------------------------------------------------
# Operations
# --------------------------------------------------------------------------

MEDIA = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf"]
WATCH_MEDIA = ["application/json;stream=watch", "application/vnd.kubernetes.protobuf;stream=watch"]
PATCH_MEDIA = ["application/apply-patch+yaml", "application/json-patch+json",
               "application/merge-patch+json", "application/strategic-merge-patch+json"]
UNAUTHORIZED = {"description": "Unauthorized"}


def ref(name):
    return {"$ref": SCHEMA_PREFIX + name}


def content(schema, media):
    return {m: {"schema": copy.deepcopy(schema)} for m in media}


def responses(schema, codes, media=MEDIA):
    text = {"200": "OK", "201": "Created", "202": "Accepted"}
    out = {c: {"content": content(schema, media), "description": text[c]} for c in codes}
    out["401"] = UNAUTHORIZED
    return out


def body(schema_name, media=("*/*",), required=True):
    b = {"content": content(ref(schema_name), media)}
    if required:
        b["required"] = True
    return b


def op_id_prefix(group, version):
    g = group.split(".")[0] if group else "core"
    return g[:1].upper() + g[1:] + version[:1].upper() + version[1:]


def tag(group, version):
    return (group.split(".")[0] if group else "core") + "_" + version


def operation(verb, op_id, description, action, gvk, tags, params, resp, request_body=None):
    op = {
        "description": description,
        "operationId": op_id,
        "responses": resp,
        "tags": [tags],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": dict(gvk),
    }
    if params:
        op["parameters"] = copy.deepcopy(params)
    if request_body is not None:
        op["requestBody"] = request_body
    return verb, op


def path_item(common, ops):
    """Build a path item; hoist parameters shared by every operation to the
    path level, sorted by name (kube-openapi's builder does the same)."""
    ops = dict(ops)
    params = list(common)
    op_params = [op.get("parameters", []) for op in ops.values()]
    shared = [p for p in op_params[0] if all(p in ps for ps in op_params[1:])] if op_params else []
    for p in shared:
        for op in ops.values():
            op["parameters"].remove(p)
            if not op["parameters"]:
                del op["parameters"]
        params.append(p)
    item = dict(ops)
    if params:
        item["parameters"] = sorted(copy.deepcopy(params), key=lambda p: (p["name"], p["in"]))
    return item


def build_paths(defs, group, version):
    paths = {}
    prefix = "/api/" + version if group == "" else "/apis/%s/%s" % (group, version)
    idp = op_id_prefix(group, version)
    tg = tag(group, version)
    dry_run = dry_run_param(defs)
    del_params = delete_params(defs)
    write_params = [dry_run, P_FIELD_MANAGER, P_FIELD_VALIDATION]
    patch_params = [dry_run, P_FIELD_MANAGER_PATCH, P_FIELD_VALIDATION, P_FORCE]
    patch_body = body(PATCH, PATCH_MEDIA)

    for r in RESOURCES[(group, version)]:
        kind, plural, schema = r["kind"], r["plural"], r["schema"]
        if schema not in defs:
            raise KeyError(schema)
        list_schema = schema + "List"
        if r["verbs"] != "create" and list_schema not in defs:
            raise KeyError(list_schema)
        gvk = {"group": group, "version": version, "kind": kind}
        declared = defs[schema].get("x-kubernetes-group-version-kind", [])
        if gvk not in declared:
            raise ValueError("%s does not declare %r" % (schema, gvk))
        verbs = r["verbs"]
        ns = r["namespaced"]
        nsw = "Namespaced" if ns else ""
        coll = prefix + ("/namespaces/{namespace}/" if ns else "/") + plural
        item = coll + "/{name}"
        common = [P_PRETTY] + ([P_NAMESPACE] if ns else [])
        p_name = path_param("name", "name of the " + kind)
        del_resp_schema = schema if r.get("delete_returns_object") else STATUS

        if verbs == "create":
            paths[coll] = path_item(common, [
                operation("post", "create%s%s" % (idp, kind), "create a " + kind, "post", gvk,
                          tg, write_params, responses(ref(schema), ["200", "201", "202"]),
                          body(schema)),
            ])
            continue

        # collection
        ops = [operation("get", "list%s%s%s" % (idp, nsw, kind),
                         "list or watch objects of kind " + kind, "list", gvk, tg, LIST_PARAMS,
                         responses(ref(list_schema), ["200"], MEDIA + WATCH_MEDIA))]
        if verbs in ("full", "nocoll", "createget"):
            ops.append(operation("post", "create%s%s%s" % (idp, nsw, kind), "create a " + kind,
                                 "post", gvk, tg, write_params,
                                 responses(ref(schema), ["200", "201", "202"]), body(schema)))
        if verbs == "full":
            coll_del = sorted(del_params + [p for p in LIST_PARAMS
                                            if p["name"] not in ("allowWatchBookmarks", "watch")],
                              key=lambda p: p["name"])
            ops.append(operation("delete", "delete%sCollection%s%s" % (idp, nsw, kind),
                                 "delete collection of " + kind, "deletecollection", gvk, tg,
                                 coll_del, responses(ref(STATUS), ["200"]),
                                 body(DELETE_OPTIONS, required=False)))
        paths[coll] = path_item(common, ops)

        # list across all namespaces
        if ns:
            paths["%s/%s" % (prefix, plural)] = path_item([], [
                operation("get", "list%s%sForAllNamespaces" % (idp, kind),
                          "list or watch objects of kind " + kind, "list", gvk, tg,
                          LIST_PARAMS + [P_PRETTY],
                          responses(ref(list_schema), ["200"], MEDIA + WATCH_MEDIA)),
            ])

        # item
        ops = [operation("get", "read%s%s%s" % (idp, nsw, kind), "read the specified " + kind,
                         "get", gvk, tg, [], responses(ref(schema), ["200"]))]
        if verbs in ("full", "nocoll"):
            ops += [
                operation("put", "replace%s%s%s" % (idp, nsw, kind),
                          "replace the specified " + kind, "put", gvk, tg, write_params,
                          responses(ref(schema), ["200", "201"]), body(schema)),
                operation("patch", "patch%s%s%s" % (idp, nsw, kind),
                          "partially update the specified " + kind, "patch", gvk, tg,
                          patch_params, responses(ref(schema), ["200", "201"]), patch_body),
                operation("delete", "delete%s%s%s" % (idp, nsw, kind), "delete a " + kind,
                          "delete", gvk, tg, del_params,
                          responses(ref(del_resp_schema), ["200", "202"]),
                          body(DELETE_OPTIONS, required=False)),
            ]
        if verbs == "createget":
            ops.append(operation("delete", "delete%s%s%s" % (idp, nsw, kind), "delete a " + kind,
                                 "delete", gvk, tg, del_params,
                                 responses(ref(del_resp_schema), ["200", "202"]),
                                 body(DELETE_OPTIONS, required=False)))
        paths[item] = path_item(common + [p_name], ops)

        # subresources
        for sub in r.get("subresources", []):
            spath = item + "/" + sub
            if sub in ("status", "scale"):
                s_schema, s_gvk = (schema, gvk) if sub == "status" else (SCALE_SCHEMA, SCALE_GVK)
                s_kind = s_gvk["kind"]
                suffix = sub.capitalize()
                name_param = path_param("name", "name of the " + s_kind)
                paths[spath] = path_item(common + [name_param], [
                    operation("get", "read%s%s%s%s" % (idp, nsw, kind, suffix),
                              "read %s of the specified %s" % (sub, kind), "get", s_gvk, tg, [],
                              responses(ref(s_schema), ["200"])),
                    operation("put", "replace%s%s%s%s" % (idp, nsw, kind, suffix),
                              "replace %s of the specified %s" % (sub, kind), "put", s_gvk, tg,
                              write_params, responses(ref(s_schema), ["200", "201"]),
                              body(s_schema)),
                    operation("patch", "patch%s%s%s%s" % (idp, nsw, kind, suffix),
                              "partially update %s of the specified %s" % (sub, kind), "patch",
                              s_gvk, tg, patch_params, responses(ref(s_schema), ["200", "201"]),
                              patch_body),
                ])
            elif sub == "log":
                log_params = [
                    qparam("container", "string",
                           "The container for which to stream logs. Defaults to only container "
                           "if there is one container in the pod."),
                    qparam("follow", "boolean",
                           "Follow the log stream of the pod. Defaults to false."),
                    qparam("insecureSkipTLSVerifyBackend", "boolean",
                           "insecureSkipTLSVerifyBackend indicates that the apiserver should not "
                           "confirm the validity of the serving certificate of the backend it "
                           "is connecting to.  This will make the HTTPS connection between the "
                           "apiserver and the backend insecure. This means the apiserver cannot "
                           "verify the log data it is receiving came from the real kubelet.  If "
                           "the kubelet is configured to verify the apiserver's TLS credentials, "
                           "it does not mean the connection to the real kubelet is vulnerable to "
                           "a man in the middle attack (e.g. an attacker could not intercept the "
                           "actual log data coming from the real kubelet)."),
                    qparam("limitBytes", "integer",
                           "If set, the number of bytes to read from the server before "
                           "terminating the log output. This may not display a complete final "
                           "line of logging, and may return slightly more or slightly less than "
                           "the specified limit."),
                    qparam("previous", "boolean",
                           "Return previous terminated container logs. Defaults to false."),
                    qparam("sinceSeconds", "integer",
                           "A relative time in seconds before the current time from which to "
                           "show logs. If this value precedes the time a pod was started, only "
                           "logs since the pod start will be returned. If this value is in the "
                           "future, no logs will be returned. Only one of sinceSeconds or "
                           "sinceTime may be specified."),
                    qparam("stream", "string",
                           "Specify which container log stream to return to the client. "
                           "Acceptable values are \"All\", \"Stdout\" and \"Stderr\". If not "
                           "specified, \"All\" is used, and both stdout and stderr are returned "
                           "interleaved. Note that when \"TailLines\" is specified, \"Stream\" "
                           "can only be set to nil or \"All\"."),
                    qparam("tailLines", "integer",
                           "If set, the number of lines from the end of the logs to show. If not "
                           "specified, logs are shown from the creation of the container or "
                           "sinceSeconds or sinceTime. Note that when \"TailLines\" is "
                           "specified, \"Stream\" can only be set to nil or \"All\"."),
                    qparam("timestamps", "boolean",
                           "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of "
                           "every line of log output. Defaults to false."),
                ]
                paths[spath] = path_item(common + [p_name], [
                    operation("get", "read%s%s%sLog" % (idp, nsw, kind),
                              "read log of the specified " + kind, "get", gvk, tg, log_params,
                              responses({"type": "string"}, ["200"],
                                        ["text/plain"] + MEDIA)),
                ])
            elif sub in ("exec", "attach", "portforward"):
                opts_kind = {"exec": "PodExecOptions", "attach": "PodAttachOptions",
                             "portforward": "PodPortForwardOptions"}[sub]
                c_gvk = {"group": group, "version": version, "kind": opts_kind}
                stdio = [
                    qparam("container", "string",
                           "The container in which to execute the command. Defaults to only "
                           "container if there is only one container in the pod."),
                    qparam("stderr", "boolean",
                           "Redirect the standard error stream of the pod for this call."),
                    qparam("stdin", "boolean",
                           "Redirect the standard input stream of the pod for this call. "
                           "Defaults to false."),
                    qparam("stdout", "boolean",
                           "Redirect the standard output stream of the pod for this call."),
                    qparam("tty", "boolean",
                           "TTY if true indicates that a tty will be allocated for the exec "
                           "call. Defaults to false."),
                ]
                if sub == "exec":
                    c_params = [qparam("command", "string",
                                       "Command is the remote command to execute. argv array. "
                                       "Not executed within a shell.")] + stdio
                elif sub == "attach":
                    c_params = stdio
                else:
                    c_params = [qparam("ports", "integer",
                                       "List of ports to forward Required when using WebSockets")]
                name_param = path_param("name", "name of the " + opts_kind)
                word = {"exec": "Exec", "attach": "Attach", "portforward": "Portforward"}[sub]
                paths[spath] = path_item([P_NAMESPACE, name_param], [
                    operation(m.lower(), "connect%s%s%s%s%s" % (idp, m.capitalize(), nsw, kind, word),
                              "connect %s requests to %s of %s" % (m, sub, kind), "connect",
                              c_gvk, tg, c_params,
                              {"200": {"content": {"*/*": {"schema": {"type": "string"}}},
                                       "description": "OK"},
                               "401": UNAUTHORIZED})
                    for m in ("GET", "POST")
                ])
            else:
                raise ValueError("unknown subresource " + sub)
    return paths


# --------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------


def gv_path(group, version):
    return "api/" + version if group == "" else "apis/%s/%s" % (group, version)


def build_document(defs, group, version):
    paths = build_paths(defs, group, version)
    roots = set()
    collect_refs(paths, roots)
    roots.update(EXTRA_ROOTS.get((group, version), []))
    has_list = any(op.get("x-kubernetes-action") == "list"
                   for item in paths.values() for op in item.values() if isinstance(op, dict))
    if has_list:
        # The list operations' watch responses (application/json;stream=watch)
        # are streams of WatchEvent objects.
        roots.add(WATCH_EVENT)
    names = reachable(defs, roots)
    return {
        "components": {"schemas": {n: defs[n] for n in sorted(names)}},
        "info": {"title": "Kubernetes", "version": K8S_VERSION},
        "openapi": "3.0.0",
        "paths": paths,
    }


def check_document(doc):
    schemas = doc["components"]["schemas"]
    refs = set()
    collect_refs(doc, refs)
    missing = refs - set(schemas)
    if missing:
        raise AssertionError("unresolved refs: %s" % sorted(missing))
    for p, item in doc["paths"].items():
        for verb, op in item.items():
            if verb == "parameters":
                continue
            for key in ("operationId", "x-kubernetes-action", "x-kubernetes-group-version-kind"):
                if key not in op:
                    raise AssertionError("%s %s lacks %s" % (verb, p, key))
            gvk = op["x-kubernetes-group-version-kind"]
            if not isinstance(gvk, dict) or set(gvk) != {"group", "version", "kind"}:
                raise AssertionError("%s %s: bad gvk %r" % (verb, p, gvk))
            if verb == "patch":
                # kubectl's QueryParamVerifierV3 only reads the operation's own parameters.
                names = [q["name"] for q in op.get("parameters", [])]
                if "fieldValidation" not in names:
                    raise AssertionError("patch %s lacks fieldValidation" % p)


def serialize(doc):
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def main():
    raw = load_definitions()
    defs = {name: convert_definition(name, s) for name, s in raw.items()}
    os.makedirs(OUT_DIR, exist_ok=True)
    index = []
    sizes = []
    for (group, version) in sorted(RESOURCES, key=lambda gv: gv_path(*gv)):
        doc = build_document(defs, group, version)
        check_document(doc)
        gvp = gv_path(group, version)
        index.append(gvp)
        data = gzip.compress(serialize(doc), compresslevel=9, mtime=0)
        fname = gvp.replace("/", "__") + ".json.gz"
        with open(os.path.join(OUT_DIR, fname), "wb") as f:
            f.write(data)
        sizes.append((fname, len(data), len(doc["components"]["schemas"]), len(doc["paths"])))
    with open(os.path.join(OUT_DIR, "index.json"), "wb") as f:
        f.write(json.dumps(index, separators=(",", ":")).encode("utf-8") + b"\n")
    for fname, size, nschemas, npaths in sizes:
        print("%-40s %8d bytes  %4d schemas  %3d paths" % (fname, size, nschemas, npaths))
    print("total %d bytes" % sum(s for _, s, _, _ in sizes))


if __name__ == "__main__":
    main()
