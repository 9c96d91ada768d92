/*
 * version: the one version string of sdps, printed by every program's
 * --version as "PROGRAM (sdps) VERSION".  Bump it here only.
 */
#ifndef SDPS_VERSION_H
#define SDPS_VERSION_H

#define SDPS_VERSION	"0.9.0"

#endif
