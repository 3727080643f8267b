import fs from "node:fs";
import path from "node:path";

/**
 * A validator for OCSF events, built from the schema's own source files (the official 1.1.0
 * repository layout: dictionary.json, categories.json, events/, objects/, profiles/, includes/),
 * the way the OCSF server compiles them: `extends` chains, `$include`d files, profiles applicable
 * to a class or object, enums merged down the chain, types from the dictionary.
 *
 * It reports: unknown attributes (at any depth), missing required attributes, wrong JSON types,
 * integer values outside an attribute's enum, profile attributes used without the profile in
 * metadata.profiles, profiles that do not apply, constraints (at_least_one, just_one), and
 * class_uid/type_uid/category_uid that do not agree.
 */
type Json = Record<string, any>;
interface AttrDef { requirement?: string; enum?: Record<string, unknown>; profile?: string; type?: string; is_array?: boolean }
interface Resolved { name: string; attributes: Map<string, AttrDef>; profiles: Set<string>; constraints: Json }

/** Where the schema is beside the checkout (../shared/ocsf-schema-1.1.0), or null. */
export function findOcsfSchema(from = process.cwd()): string | null {
  for (let dir = path.resolve(from); ; dir = path.dirname(dir)) {
    const cand = path.join(dir, "..", "shared", "ocsf-schema-1.1.0");
    if (fs.existsSync(path.join(cand, "dictionary.json"))) return cand;
    if (path.dirname(dir) === dir) return null;
  }
}

export class OcsfSchema {
  private readonly dict: Json;
  private readonly types: Json;
  private readonly eventFiles = new Map<string, Json>();
  private readonly objectFiles = new Map<string, Json>();
  private readonly categories: Json;
  private readonly classes = new Map<number, Resolved>();
  private readonly objects = new Map<string, Resolved>();
  readonly version: string;

  constructor(private readonly root: string) {
    this.dict = this.read("dictionary.json");
    this.types = this.dict.types.attributes;
    this.categories = this.read("categories.json").attributes;
    this.version = this.read("version.json").version;
    for (const f of fs.readdirSync(path.join(root, "events"), { recursive: true }) as string[]) {
      if (!f.endsWith(".json")) continue;
      const j = this.read(path.join("events", f));
      this.eventFiles.set(j.name, j);
    }
    for (const f of fs.readdirSync(path.join(root, "objects"))) {
      if (!f.endsWith(".json")) continue;
      const j = this.read(path.join("objects", f));
      this.objectFiles.set(j.name, j);
    }
    const categoryOf = (ev: Json): string | undefined => ev.category ?? (ev.extends ? categoryOf(this.eventFiles.get(ev.extends) ?? {}) : undefined);
    for (const ev of this.eventFiles.values()) {
      if (ev.uid === undefined && ev.name !== "base_event") continue;
      const c = categoryOf(ev);
      const cat = !c || c === "other" || !this.categories[c] ? 0 : this.categories[c].uid;
      this.classes.set(ev.name === "base_event" ? 0 : cat * 1000 + ev.uid, this.resolve(ev, this.eventFiles));
    }
  }

  private read(rel: string): Json {
    return JSON.parse(fs.readFileSync(path.join(this.root, rel), "utf8"));
  }

  private profileAttrs(name: string): Json {
    const f = path.join(this.root, "profiles", `${name}.json`);
    return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, "utf8")).attributes ?? {} : {};
  }

  private resolve(def: Json, pool: Map<string, Json>): Resolved {
    const parent = def.extends && def.extends !== "object" && pool.get(def.extends) ? this.resolve(pool.get(def.extends)!, pool) : null;
    const attributes = new Map<string, AttrDef>(parent ? [...parent.attributes].map(([k, v]) => [k, { ...v }]) : []);
    const profiles = new Set<string>(parent?.profiles ?? []);
    for (const p of def.profiles ?? []) profiles.add(p);
    const merge = (attrs: Json, profile?: string) => {
      for (const [k, v] of Object.entries(attrs)) {
        if (k === "$include") continue;
        const prev = attributes.get(k);
        const next: AttrDef = { ...(prev ?? {}), ...(v as Json) };
        if ((v as Json).enum || prev?.enum) next.enum = { ...(prev?.enum ?? {}), ...((v as Json).enum ?? {}) };
        // An attribute the class or object defines itself is not tied to a profile.
        next.profile = profile === undefined || (prev && !prev.profile) ? undefined : profile;
        attributes.set(k, next);
      }
    };
    for (const inc of (def.attributes?.$include ?? []) as string[]) {
      const j = this.read(inc);
      merge(j.attributes ?? {}, inc.startsWith("profiles/") ? j.name : undefined);
    }
    for (const p of profiles) merge(this.profileAttrs(p), p);
    merge(def.attributes ?? {});
    return { name: def.name, attributes, profiles, constraints: { ...(parent?.constraints ?? {}), ...(def.constraints ?? {}) } };
  }

  private object(name: string): Resolved | undefined {
    if (!this.objects.has(name)) {
      const def = this.objectFiles.get(name);
      if (!def) return undefined;
      this.objects.set(name, this.resolve(def, this.objectFiles));
    }
    return this.objects.get(name);
  }

  private typeOf(name: string, def: AttrDef): { type: string; isArray: boolean } {
    const d = this.dict.attributes[name] ?? {};
    return { type: def.type ?? d.type, isArray: Boolean(def.is_array ?? d.is_array) };
  }

  private baseScalar(t: string): string {
    let cur = t;
    for (let i = 0; i < 5 && this.types[cur]?.type; i++) cur = this.types[cur].type;
    return cur;
  }

  private checkScalar(where: string, type: string, v: unknown, errs: string[]): void {
    const base = this.baseScalar(type);
    const ok = base === "string_t" ? typeof v === "string"
      : base === "integer_t" || base === "long_t" ? Number.isInteger(v)
      : base === "float_t" ? typeof v === "number"
      : base === "boolean_t" ? typeof v === "boolean"
      : base === "json_t" ? true : false;
    if (!ok) errs.push(`${where}: ${JSON.stringify(v)} is not a ${type}`);
    const re = this.types[type]?.regex;
    if (ok && typeof v === "string" && re && !new RegExp(re).test(v)) errs.push(`${where}: ${JSON.stringify(v)} does not match ${type}`);
  }

  private checkObject(where: string, def: Resolved, v: Json, profiles: Set<string>, errs: string[]): void {
    for (const [k, val] of Object.entries(v)) {
      const a = def.attributes.get(k);
      if (!a) { errs.push(`${where}.${k}: not an attribute of ${def.name}`); continue; }
      if (a.profile && !profiles.has(a.profile)) errs.push(`${where}.${k}: belongs to profile "${a.profile}", not declared in metadata.profiles`);
      const { type, isArray } = this.typeOf(k, a);
      const check = (x: unknown, w: string) => {
        if (!type) return;
        if (type === "object") return; // free-form (unmapped)
        if (type.endsWith("_t")) {
          this.checkScalar(w, type, x, errs);
          if (a.enum && typeof x === "number" && !["class_uid", "category_uid", "type_uid"].includes(k) && !(String(x) in a.enum)) errs.push(`${w}: ${x} is not in the enum of ${k}`);
        } else {
          const o = this.object(type);
          if (!o) { errs.push(`${w}: unknown object type ${type}`); return; }
          if (x === null || typeof x !== "object" || Array.isArray(x)) { errs.push(`${w}: must be a ${type} object`); return; }
          this.checkObject(w, o, x as Json, profiles, errs);
        }
      };
      if (isArray) {
        if (!Array.isArray(val)) errs.push(`${where}.${k}: must be an array`);
        else val.forEach((x, i) => check(x, `${where}.${k}[${i}]`));
      } else if (Array.isArray(val)) errs.push(`${where}.${k}: must not be an array`);
      else check(val, `${where}.${k}`);
    }
    for (const [k, a] of def.attributes) {
      if (a.requirement === "required" && (!a.profile || profiles.has(a.profile)) && !(k in v)) errs.push(`${where}.${k}: required by ${def.name}, missing`);
    }
    const c = def.constraints ?? {};
    if (c.at_least_one && !(c.at_least_one as string[]).some((k) => k in v)) errs.push(`${where}: ${def.name} needs at least one of ${c.at_least_one.join(", ")}`);
    if (c.just_one && (c.just_one as string[]).filter((k) => k in v).length !== 1) errs.push(`${where}: ${def.name} needs exactly one of ${c.just_one.join(", ")}`);
  }

  /** Every problem of one event; empty when it is valid. */
  validate(ev: Json): string[] {
    const errs: string[] = [];
    const cls = this.classes.get(ev.class_uid);
    if (!cls) return [`class_uid ${ev.class_uid} is not an OCSF ${this.version} class`];
    if (ev.category_uid !== Math.floor(ev.class_uid / 1000)) errs.push(`category_uid ${ev.category_uid} does not match class_uid ${ev.class_uid}`);
    if (ev.type_uid !== ev.class_uid * 100 + ev.activity_id) errs.push(`type_uid ${ev.type_uid} is not class_uid × 100 + activity_id`);
    if (ev.metadata?.version !== this.version) errs.push(`metadata.version ${ev.metadata?.version} is not ${this.version}`);
    const profiles = new Set<string>(ev.metadata?.profiles ?? []);
    for (const p of profiles) {
      if (!fs.existsSync(path.join(this.root, "profiles", `${p}.json`))) errs.push(`metadata.profiles: unknown profile "${p}"`);
    }
    this.checkObject(cls.name, cls, ev, profiles, errs);
    return errs;
  }
}
