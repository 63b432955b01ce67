package tenant

// Management API: roles and user roles.

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"

	"github.com/authmesh/authmesh/pkg/authz"
)

func (s *Server) roleJSON(role *Role) map[string]any {
	return map[string]any{"id": role.ID, "name": role.Name, "description": role.Description}
}

func (s *Server) roleByID(id string) *Role {
	for _, name := range s.model.RoleOrder {
		if role := s.model.Roles[name]; role.ID == id {
			return role
		}
	}
	return nil
}

func (s *Server) writeRoles(w http.ResponseWriter, r *http.Request, names []string) {
	page, perPage, totals, err := paging(r)
	if err != nil {
		writeMgmtError(w, http.StatusBadRequest, err.Error(), "invalid_query_string")
		return
	}
	all := []map[string]any{}
	for _, n := range names {
		if role := s.model.Roles[n]; role != nil {
			all = append(all, s.roleJSON(role))
		}
	}
	sel := pageOf(all, page, perPage)
	if !totals {
		writeJSON(w, http.StatusOK, sel)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"start": page * perPage, "limit": perPage, "total": len(all), "roles": sel})
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request, _ *authz.Claims) {
	filter := strings.ToLower(r.URL.Query().Get("name_filter"))
	names := slices.DeleteFunc(slices.Clone(s.model.RoleOrder), func(n string) bool {
		return filter != "" && !strings.Contains(strings.ToLower(n), filter)
	})
	s.writeRoles(w, r, names)
}

func (s *Server) getRole(w http.ResponseWriter, r *http.Request, _ *authz.Claims) {
	role := s.roleByID(r.PathValue("id"))
	if role == nil {
		writeMgmtError(w, http.StatusNotFound, "The role does not exist.", "inexistent_role")
		return
	}
	writeJSON(w, http.StatusOK, s.roleJSON(role))
}

func (s *Server) getUserRoles(w http.ResponseWriter, r *http.Request, _ *authz.Claims) {
	if u, ok := s.userFromPath(w, r); ok {
		s.writeRoles(w, r, s.inRoleOrder(u.Roles))
	}
}

func (s *Server) inRoleOrder(names []string) []string {
	return slices.DeleteFunc(slices.Clone(s.model.RoleOrder), func(n string) bool { return !slices.Contains(names, n) })
}

func (s *Server) changeUserRoles(add bool) mgmtHandler {
	return func(w http.ResponseWriter, r *http.Request, _ *authz.Claims) {
		id, body, ok := s.userChangeRequest(w, r)
		if !ok {
			return
		}
		var ids []string
		if raw, has := body["roles"]; !has || json.Unmarshal(raw, &ids) != nil || len(ids) == 0 || len(body) != 1 {
			writeMgmtError(w, http.StatusBadRequest, `Payload validation error: expected {"roles":["rol_..."]} with at least one role id`, "invalid_body")
			return
		}
		var names []string
		for _, rid := range ids {
			role := s.roleByID(rid)
			if role == nil {
				writeMgmtError(w, http.StatusNotFound, "The role does not exist: "+truncate(rid, 60), "inexistent_role")
				return
			}
			names = append(names, role.Name)
		}
		_, err := s.store.update(id, func(ch *userChange, u userRecord) {
			cur := u.Roles
			if add {
				for _, n := range names {
					if !slices.Contains(cur, n) {
						cur = append(cur, n)
					}
				}
			} else {
				cur = slices.DeleteFunc(cur, func(n string) bool { return slices.Contains(names, n) })
			}
			ch.Roles, ch.RolesSet = s.inRoleOrder(cur), true
		})
		if err != nil {
			s.storeFailed(w, r, err)
			return
		}
		note(r, "user_id", id, "roles_changed", strings.Join(names, ","))
		w.WriteHeader(http.StatusNoContent)
	}
}
