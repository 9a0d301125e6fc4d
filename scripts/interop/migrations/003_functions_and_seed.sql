CREATE FUNCTION {{schema}}.user_count() RETURNS bigint LANGUAGE sql AS $$
    SELECT count(*) FROM {{tables.users}};
$$;
INSERT INTO {{tables.users}} (email) VALUES ('ada@example.org'), ('semi;colon@example.org');
INSERT INTO {{tables.posts}} (user_id, body)
SELECT id, 'it''s the first post; welcome' FROM {{tables.users}} WHERE email = 'ada@example.org';
