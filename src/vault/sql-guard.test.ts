import assert from "node:assert/strict";
import { before, test } from "node:test";
import { classify, loadSqlGuard } from "./sql-guard.js";

before(() => loadSqlGuard());

test("role password changes are refused however they are spelled", () => {
  const blocked = [
    "ALTER ROLE agent PASSWORD 'x'",
    "ALTER/**/ROLE agent PASSWORD 'x'",
    "ALTER/* a /* nested */ comment */ROLE agent PASSWORD 'x'",
    "alter\nuser\tagent with password 'x'",
    "ALTER -- comment\n ROLE agent PASSWORD 'x'",
    "ALTER ROLE \"agent\" ENCRYPTED PASSWORD 'SCRAM-SHA-256$4096:…'",
    "ALTER ROLE CURRENT_USER PASSWORD $$x$$",
    "ALTER ROLE agent PASSWORD $tag$x$tag$",
    "ALTER USER agent PASSWORD E'a\\'b'",
    "ALTER ROLE agent PASSWORD NULL",
    "SELECT 1; ALTER ROLE agent PASSWORD 'x'; SELECT 2",
    "CREATE ROLE other LOGIN PASSWORD 'x'",
    "DO $$ BEGIN EXECUTE 'ALTER ROLE agent PASSWORD ''x'''; END $$",
    "DO LANGUAGE plpgsql $b$ BEGIN EXECUTE format('ALTER ROLE %I PASSWORD %L', current_user, 'x'); END $b$",
    "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $f$ BEGIN EXECUTE 'alter role agent password ''x'''; END $f$",
    "CREATE PROCEDURE p() LANGUAGE sql AS $p$ ALTER ROLE agent PASSWORD 'x' $p$",
  ];
  for (const sql of blocked) assert.equal(classify(sql).blocked, true, sql);
});

test("ordinary statements pass, including ones that merely mention the words", () => {
  const allowed = [
    "SELECT 1",
    "SELECT 'alter role agent password x'",
    "SELECT $$ALTER ROLE agent PASSWORD 'x'$$",
    "SELECT * FROM users WHERE password_hash = 'x' -- alter role",
    "/* ALTER ROLE agent PASSWORD 'x' */ SELECT 1",
    "ALTER ROLE agent SET statement_timeout = '5s'",
    "CREATE TABLE roles(name text, password text)",
    "INSERT INTO roles VALUES ('alter role', 'password')",
    "DO $$ BEGIN RAISE NOTICE 'hello'; END $$",
  ];
  for (const sql of allowed) assert.equal(classify(sql).blocked, false, sql);
});
