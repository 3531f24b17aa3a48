-- Invitations become capabilities (PROTOCOL section 6; docs/auth.md "Invitations").
--
-- An invitation is a random code an owner hands over out of band; whoever signs in and
-- presents it joins the space with its role, as the inviter (eventstore/invitations.py).
-- Nothing is applied at registration any more. Only the SHA-256 digest of a code is
-- stored (a code is 256 random bits, so a plain hash is enough, as for refresh tokens).
--
-- A row lives while its invitation can still be used: accepting or cancelling one
-- deletes it, so does the inviter losing the owner role (members.change_member), and
-- expired rows of a space are purged when that space gets its next invitation.
--
-- The table is altered in place, not recreated, so privileges granted on it to the
-- application role (eventstore/roles.py) stay. Its old rows (email-keyed invitations
-- that registration applied) carry no code and can never be handed over: they go.

DELETE FROM invitations;

ALTER TABLE invitations DROP CONSTRAINT invitations_pkey;
DROP INDEX invitations_email_idx;

ALTER TABLE invitations
    ADD COLUMN invitation_id uuid        NOT NULL,
    -- SHA-256 of the code; the code itself is shown once, in the answer that created it.
    ADD COLUMN code_hash     bytea       NOT NULL,
    ADD COLUMN expires_at    timestamptz NOT NULL,
    ADD CONSTRAINT invitations_pkey PRIMARY KEY (invitation_id),
    ADD CONSTRAINT invitations_code_hash_key UNIQUE (code_hash),
    -- One pending invitation per space and email: inviting the email again replaces it.
    ADD CONSTRAINT invitations_space_email_key UNIQUE (space_id, email),
    ADD CONSTRAINT invitations_space_fkey FOREIGN KEY (space_id) REFERENCES spaces (space_id);

-- The owners' list, oldest first (GET /v1/spaces/{id}/invitations), and the withdrawal
-- of an owner's invitations when they lose the role.
CREATE INDEX invitations_space_idx ON invitations (space_id, created_at, invitation_id);
CREATE INDEX invitations_inviter_idx ON invitations (space_id, invited_by);
