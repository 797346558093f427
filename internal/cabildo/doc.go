// Package cabildo is the domain of Cabildo: events, days, rooms, tracks, speakers and
// sessions, the records appended to the log of record, the typed changes derived from them,
// validation and the one error type with stable machine codes. It imports only the standard
// library; every other package depends on it, never the reverse.
package cabildo
